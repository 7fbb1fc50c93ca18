# banditd Makefile: the single source of truth; README and .ci/run call these targets.
# `make run` and `make test` each set themselves up on a fresh machine (venv, install, redis).
.DEFAULT_GOAL := test
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SRC := banditd tests bench
PROTOS := $(wildcard protos/banditd/api/v1/*.proto)
CONFIG ?= examples/banditd.toml

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,sim]'
	touch $@

install: $(STAMP)  ## venv with runtime, dev and sim dependencies

# redis-server for the integration tests (they start their own on a free port).
redis-bin:
	@command -v redis-server >/dev/null || { \
	  echo "installing redis-server (Debian package)"; \
	  (apt-get update -qq && apt-get install -y -qq redis-server) >/dev/null; }

run: $(STAMP)  ## the daemon on the embedded in-memory store
	$(VENV)/bin/banditd serve --config $(CONFIG)

proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)

proto-check: proto
	git diff --exit-code -- banditd/api

fmt: $(STAMP)
	$(VENV)/bin/ruff check --fix $(SRC) && $(VENV)/bin/ruff format $(SRC)

lint: $(STAMP)
	$(VENV)/bin/ruff check $(SRC)
	$(VENV)/bin/ruff format --check $(SRC)
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy banditd

pytest: $(STAMP) redis-bin
	BANDITD_REQUIRE_REDIS=1 $(PY) -m pytest -q

test: lint typecheck proto-check pytest  ## everything CI runs

bench: $(STAMP)  ## throughput/latency next to peers and machine ceilings (not in CI)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m bench

# --- redis backend (docs/redis.md) ---
redis-route-cost: $(STAMP) redis-bin  ## round trips and bytes per Route on the Redis backend
	$(PY) -m tests.integration.route_cost

.PHONY: install redis-bin run proto proto-check fmt lint typecheck pytest test bench
.PHONY: redis-route-cost
