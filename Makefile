# Everything runs from a local virtualenv that these targets create.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.DEFAULT_GOAL := help
.PHONY: help install demo test test-unit test-integration lint bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the pipeline with its dev tools

demo: $(STAMP) ## broker + worker + synthetic traffic, alerts shown live (Ctrl-C stops)
	$(BIN)/engagement demo

test: $(STAMP) ## the whole suite: lint, unit tests, integration tests on a broker it starts
	$(MAKE) --no-print-directory lint
	$(BIN)/python -m pytest

test-unit: $(STAMP) ## unit tests only (no broker)
	$(BIN)/python -m pytest tests/unit

test-integration: $(STAMP) ## integration tests only
	$(BIN)/python -m pytest tests/integration

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check pipeline agents tests bench
	$(BIN)/mypy

bench: $(STAMP) ## throughput of the worker against a raw consumer (200k events)
	$(BIN)/python bench/throughput.py --events 200000

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
