# FindMe: `make run` serves on http://127.0.0.1:8000, `make test` runs the whole suite.
VENV    ?= .venv
PYTHON  ?= python3
STAMP   := $(VENV)/.installed-stamp

.PHONY: install run test lint bench services clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: install
	$(VENV)/bin/findme serve

services:
	@scripts/test-services.sh

test: install services
	$(VENV)/bin/python -m pytest

lint: install
	$(VENV)/bin/ruff check findme tests bench alembic
	$(VENV)/bin/ruff format --check findme tests bench alembic
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) var tests/artifacts
