# FindMe: `make run` serves on http://127.0.0.1:8000, `make test` runs the whole suite.
VENV    ?= .venv
PYTHON  ?= python3
STAMP   := $(VENV)/.installed-stamp
# bash: the benchmarks' outputs go through tee, and a recipe keeps the benchmark's exit status.
SHELL   := /bin/bash

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
# the first time (test photos are generated and cached in bench/.cache), less afterwards. The
# outputs the goals are read from are kept in bench/.cache/out, and the run ends with the table
# of goals against what was measured (bench/summary.py).
BENCH_OUT := bench/.cache/out
bench: install services
	@command -v wrk >/dev/null || scripts/apt-install.sh wrk
	@mkdir -p $(BENCH_OUT)
	$(VENV)/bin/python -u -m bench.lists | tee $(BENCH_OUT)/lists.txt; exit $${PIPESTATUS[0]}
	$(VENV)/bin/python -u -m bench.uploads | tee $(BENCH_OUT)/uploads.txt; exit $${PIPESTATUS[0]}
	$(VENV)/bin/python -u -m bench.pipeline | tee $(BENCH_OUT)/pipeline.txt; exit $${PIPESTATUS[0]}
	$(VENV)/bin/python -m bench.group_shots
	$(VENV)/bin/python -m bench.aws_calls
	$(VENV)/bin/python -m bench.detection
	$(VENV)/bin/python -m bench.recovery
	$(VENV)/bin/python -m bench.live
	$(VENV)/bin/python -m bench.sign_ins
	$(VENV)/bin/python -m bench.scale
	$(VENV)/bin/python -m bench.summary $(BENCH_OUT)

lint: install
	$(VENV)/bin/ruff check findme tests bench alembic
	$(VENV)/bin/ruff format --check findme tests bench alembic
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) var tests/artifacts
