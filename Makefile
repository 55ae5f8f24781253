# `make repro`: set everything up and rebuild every result (`dvc repro`).
# `make test`:  set everything up, lint (ruff, configured in pyproject.toml) and run the tests.
VENV ?= .venv
PYTHON ?= python3
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup repro test

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	@# tests/test_attacks.py checks FGSM and PGD against torchattacks, whose pin requests~=2.25 would
	@# drag MLflow back to 2.14: it is installed on its own, without its dependencies (all present).
	$(VENV)/bin/pip install --quiet --no-deps 'torchattacks>=3.5'
	touch $@

repro: setup
	dvc repro

test: setup
	ruff check .
	python -m pytest
