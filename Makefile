# Everything runs from a local virtualenv that these targets create.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
# Unit tests run in JOBS processes side by side (pytest-xdist, a test file to each
# at a time). Integration tests run in IT_JOBS processes, each with its own broker;
# 0 runs them one at a time in this process (see README, Testing).
JOBS ?= 2
IT_JOBS ?= 2
PYTEST := $(BIN)/python -m pytest --dist loadfile

.DEFAULT_GOAL := help
.PHONY: help install demo test test-unit test-integration test-apache-kafka test-apache-kafka-if-present prometheus-tools alertmanager-tools lint bench bench-latency bench-throughput bench-restart bench-soak bench-detection clean

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

test: $(STAMP) ## the whole suite: lint, unit tests, integration tests on the embedded broker and on Apache Kafka
	$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory prometheus-tools
	@$(MAKE) --no-print-directory alertmanager-tools
	$(PYTEST) -n $(JOBS) tests/unit
	@if [ -n "$$ENGAGEMENT_TEST_BROKER" ]; then \
		$(MAKE) --no-print-directory test-integration && \
		echo "make test: integration tests ran against ENGAGEMENT_TEST_BROKER=$$ENGAGEMENT_TEST_BROKER only"; \
	else \
		$(MAKE) --no-print-directory -j2 --output-sync=target test-integration test-apache-kafka-if-present; \
	fi

# The two brokers' passes run side by side; each target's output is printed whole
# when it ends. Without java and mvn the Apache Kafka pass is skipped, visibly.
test-apache-kafka-if-present: $(STAMP)
	@if command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory test-apache-kafka; \
	else \
		echo "make test: SKIPPED the Apache Kafka pass: java and mvn are needed (integration tests ran on the embedded broker only)"; \
	fi

# promtool (from Debian's prometheus package, Prometheus 2.x) checks deploy/prometheus and
# runs the rules' unit tests (tests/unit/test_promtool.py). When it is missing, root with
# apt-get installs the package; otherwise one line says so and those tests are skipped.
prometheus-tools: ## promtool for the Prometheus rule tests (installs Debian's prometheus as root)
	@if ! command -v promtool >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "make: installing promtool (apt-get install prometheus)"; \
		apt-get update -qq >/dev/null && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	fi; \
	if ! command -v promtool >/dev/null 2>&1; then \
		echo "make test: SKIPPED the promtool pass: promtool is needed (apt-get install prometheus, as root); deploy/prometheus was checked structurally only"; \
	fi

# Alertmanager and amtool (Debian's prometheus-alertmanager, 0.25) for the bridge's
# integration tests (tests/integration/test_alertmanager_bridge.py) and `amtool
# check-config` of deploy/alertmanager (tests/unit/test_deploy.py). Installed as root
# with apt-get when missing; otherwise one line says so and those tests are skipped.
alertmanager-tools: ## Alertmanager and amtool for the bridge's tests (installs Debian's prometheus-alertmanager as root)
	@if ! command -v prometheus-alertmanager >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "make: installing Alertmanager (apt-get install prometheus-alertmanager)"; \
		apt-get update -qq >/dev/null && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus-alertmanager >/dev/null; \
	fi; \
	if ! command -v prometheus-alertmanager >/dev/null 2>&1; then \
		echo "make test: SKIPPED the Alertmanager pass: prometheus-alertmanager is needed (apt-get install prometheus-alertmanager, as root); the bridge was tested without it"; \
	fi

test-unit: $(STAMP) ## unit tests only (no broker)
	@$(MAKE) --no-print-directory prometheus-tools
	@$(MAKE) --no-print-directory alertmanager-tools
	$(PYTEST) -n $(JOBS) tests/unit

test-integration: $(STAMP) ## integration tests only (embedded broker, or ENGAGEMENT_TEST_BROKER)
	@$(MAKE) --no-print-directory prometheus-tools
	@$(MAKE) --no-print-directory alertmanager-tools
	$(PYTEST) -n $(IT_JOBS) tests/integration

test-apache-kafka: $(STAMP) ## integration tests on Apache Kafka 4.x (jars fetched once by mvn)
	@$(MAKE) --no-print-directory prometheus-tools
	ENGAGEMENT_TEST_BROKER=apache-kafka $(PYTEST) -n $(IT_JOBS) tests/integration

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check pipeline agents tests bench
	$(BIN)/mypy

bench: $(STAMP) ## raw loop, Quix Streams, bare faust and the pipeline on one 200k backlog, 3 rounds
	$(BIN)/python bench/compare.py

bench-latency: $(STAMP) ## open-loop latency at 1k/5k/10k events/s: windows after final, alerts after the event
	$(BIN)/python bench/latency.py

bench-throughput: $(STAMP) ## the worker alone against a raw consumer (200k events, one run)
	$(BIN)/python bench/throughput.py --events 200000

bench-restart: $(STAMP) ## restart time after kill -9 with 1M events of state, against a clean start
	$(BIN)/python bench/restart.py --events 1000000

bench-soak: $(STAMP) ## resident memory over 10M events once the dedup horizon is full; counts exact
	$(BIN)/python bench/soak.py

bench-detection: $(STAMP) ## NAB scores of the detector, leave-one-category-out over 53 labeled series
	$(BIN)/python bench/detection.py

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
