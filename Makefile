# Every target creates .venv when missing and installs the project into it first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DATA ?= ../shared/data
RUN_DIR ?= runs/main

.PHONY: run test test-all install triton-env lint clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all,dev]'
	@touch $(STAMP)

TRITON_STAMP := .venv-triton/.ready-stamp

install: $(STAMP)

# The local Triton server's python backend needs numpy < 2: it gets its own environment.
$(TRITON_STAMP): serving/setup_triton_env.sh
	bash serving/setup_triton_env.sh
	@touch $(TRITON_STAMP)

triton-env: $(TRITON_STAMP)

# The main job: the most complete flow that exists, locally, on the real data.
run: $(STAMP) $(TRITON_STAMP)
	$(VENV)/bin/tailsynth main --data $(DATA) --out $(RUN_DIR) --overwrite

# The default test tier (no slow, no GPU tests).
test: $(STAMP) $(TRITON_STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP) $(TRITON_STAMP)
	$(PY) -m pytest -q -m "not gpu"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests components pipelines serving

clean:
	rm -rf $(VENV) .venv-triton runs .pytest_cache
