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

# One worker per core, each with whole test files (their module fixtures are computed once):
# much of the suite waits on servers, browsers and mail rather than computing.
test: install services
	$(VENV)/bin/python -m pytest -n auto --dist loadfile

# Every benchmark, each printing its figures (docs/BENCHMARKS.md); about half an hour on 2 cores
# the first time (test photos are generated and cached in bench/.cache), less afterwards.
bench: install services
	@command -v wrk >/dev/null || scripts/apt-install.sh wrk
	$(VENV)/bin/python -m bench.lists
	$(VENV)/bin/python -m bench.uploads
	$(VENV)/bin/python -m bench.pipeline
	$(VENV)/bin/python -m bench.group_shots
	$(VENV)/bin/python -m bench.aws_calls
	$(VENV)/bin/python -m bench.detection
	$(VENV)/bin/python -m bench.recovery
	$(VENV)/bin/python -m bench.live
	$(VENV)/bin/python -m bench.scale

lint: install
	$(VENV)/bin/ruff check findme tests bench alembic
	$(VENV)/bin/ruff format --check findme tests bench alembic
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) var tests/artifacts
