# crackcore: two commands do everything on a fresh machine: `make reproduce` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup.stamp

.PHONY: setup test unit nbtest quick reproduce bench lab clean refresh-nbrefs

setup: $(STAMP)

# Re-installs only when the package metadata changes; a second `make setup` does nothing.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name crackcore --display-name "crackcore (.venv)" >/dev/null
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

lab: setup
	$(VENV)/bin/jupyter lab notebooks/
