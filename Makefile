# cribwatch developer and CI entry points.
#
#   make test     install the venv and system packages (Mosquitto), run the test suite
#                 (PYTEST_ARGS='-k broker -x' passes options through)
#   make lint     ruff check and mypy (strict, configured in pyproject.toml)
#   make demo     run the demo (falls back to an in-process broker without Mosquitto)
#   make bench    alarm latency benchmark with 100 simulated cribs against a real Mosquitto
#   make bench-flood  the same alarm latency while one client floods junk at 4,000 msg/s (ack, unknown sensor
#                 id, bad JSON), beside no flood in the same run
#   make bench-peers  the gateway beside the floor relay and a tuned Node-RED flow (npm installs it on first
#                 use), 100 and 1,000 sensors, rounds interleaved; plots docs/img/latency-peers.png
#   make bench-throughput  rate steps of sensor messages: accepted, CPU and alarm p99 at each step
#   make bench-influx  points/s into a real influxd through the outbox, its size on disk, and the alarm latency
#                 beside the floor while it runs
#   make dashboards  write the Grafana dashboards of dashboards/ from devtools/dashboards.py
#   make bench-tls  a QoS 1 hop and a connect on the shipped broker, plain beside TLS (docs/broker.md)
#   make bench-store  the incident log's pages with 100,000 incidents (with timelines) in a real store file:
#                 first, filtered and deep pages, a timeline, the statistics, beside the welcome page as the floor
#   make clean    remove the venv, caches and build output

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv demo system-deps test lint bench bench-flood bench-peers bench-throughput bench-influx dashboards bench-tls bench-store clean

# -- environment ------------------------------------------------------------------------------------

venv: $(STAMP)

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "cribwatch needs Python 3.11+; '$(PYTHON)' is $$($(PYTHON) --version 2>&1)" >&2; exit 1; }
	@scripts/ensure-system-deps venv $(PYTHON)
	$(PYTHON) -m venv $(VENV)

# Reinstalled only when pyproject.toml is newer than the stamp.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check --quiet -e '.[dev]'
	@touch $(STAMP)

system-deps:
	@scripts/ensure-system-deps

# -- targets ----------------------------------------------------------------------------------------

demo: venv
	$(BIN)/cribwatch demo

test: venv system-deps
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

screenshots: venv system-deps  ## the web pages' screenshots in docs/img/ (the browser tests take them)
	CRIBWATCH_SCREENSHOTS=1 $(BIN)/python -m pytest -q tests/test_web_browser.py tests/test_web_incidents_browser.py

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: venv system-deps
	$(BIN)/python -m bench.latency --cribs 100

bench-flood: venv system-deps
	$(BIN)/python -m bench.flood --cribs 100 --rate 4000 --kind ack --kind unknown_sensor --kind bad_json

bench-peers: venv system-deps
	$(BIN)/python -m bench.peers --scales 100,1000 --plot docs/img/latency-peers.png

bench-throughput: venv system-deps
	$(BIN)/python -m bench.throughput
bench-influx: venv system-deps
	$(BIN)/python -m bench.influx

dashboards: venv
	$(BIN)/python -m devtools.dashboards

bench-tls: venv system-deps
	$(BIN)/python -m bench.tls

bench-store: venv
	$(BIN)/python -m bench.store

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
	find . -path ./.git -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -type d -prune -exec rm -rf {} +
