# `make setup`: the environment of uv.lock (every package pinned, with hashes) in .venv.
# `make repro`: set everything up and rebuild every result (`dvc repro`).
# `make test`:  set everything up, lint (ruff, configured in pyproject.toml) and run the tests, but
#               those through another system (`make test-system`: Slurm, DVC's queue, torchrun, the
#               team server, a browser, killed stages). CI runs both.
# `make lock`:  refresh uv.lock after a change to pyproject.toml's dependencies (docs/reproducibility.md).
VENV ?= .venv
PYTHON ?= python3
# The uv that installs the lock; a newer one reads it too, but the lock's format is uv's own.
UV_VERSION ?= 0.13.9
UV := $(abspath $(VENV))/bin/uv
export PATH := $(abspath $(VENV))/bin:$(PATH)
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))

.PHONY: setup repro test test-system lock

setup: $(VENV)/.installed

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet 'uv==$(UV_VERSION)'

# --locked: fails, rather than resolving anew, when uv.lock no longer matches pyproject.toml.
# --inexact: uv itself, which is not in the lock, stays in the environment.
# --compile-bytecode: every package's .pyc written once, here; where PYTHONDONTWRITEBYTECODE is set
# (as on some machines and CI runners) Python would otherwise compile torch, MLflow and pandas from
# source in every stage process, the larger part of a stage's start-up (benchmarks/stage_startup.py).
$(VENV)/.installed: pyproject.toml uv.lock Makefile | $(UV)
	$(UV) sync --locked --extra dev --inexact --compile-bytecode
	touch $@

lock: | $(UV)
	$(UV) lock

repro: setup
	dvc repro

test: setup
	ruff check .
	python -m pytest -m "not system"

test-system: setup
	python -m pytest -m system
