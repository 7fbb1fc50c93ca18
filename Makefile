# banditd Makefile: the single source of truth; README and .ci/run call these targets.
# `make run` and `make test` each set themselves up on a fresh machine (venv, install, redis).
.DEFAULT_GOAL := test
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SRC := banditd tests $(wildcard bench)
PROTOS := $(wildcard protos/banditd/api/v1/*.proto)
CONFIG ?= banditd/examples/banditd.toml

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[server,dev,sim,text,ope,bench]'  # text: MiniLM tests; ope: obp test; bench: VW/MABWiser peers in sim tests
	$(PY) -m pip install -q --no-deps obp==0.4.1  # OBD sample + reference estimators; never torch
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
	cp $(PROTOS) banditd/api/v1/  # shipped in the wheel for clients in other languages

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

# --- deploy: container image and Kubernetes manifests (docs/deploy.md) ----------------------
IMAGE ?= banditd:0.1.0
EXTRAS ?=

image:  ## build the container image (needs Docker/BuildKit; not available on CI machines)
	docker build --build-arg EXTRAS=$(EXTRAS) -t $(IMAGE) .

deploy-render: $(STAMP)  ## render the kustomize overlays to out/deploy/<overlay>.yaml
	mkdir -p out/deploy
	for o in dev prod; do $(VENV)/bin/kubectl kustomize deploy/overlays/$$o > out/deploy/$$o.yaml; done

deploy-check: deploy-render  ## hadolint + strict schema validation + the deploy tests
	$(VENV)/bin/hadolint Dockerfile
	$(VENV)/bin/kubernetes-validate --strict --quiet -k 1.30 out/deploy/dev.yaml out/deploy/prod.yaml
	$(PY) -m pytest -q tests/deploy tests/integration/test_shutdown.py

# -- feature pipeline (docs/features.md) --
# The n-gram encoder as one 16 MB file, for model_path (optional: the wheel ships its graph and
# the daemon draws the table at start; banditd/features/ngram.py). Built with `onnx`
# (dev and text extras). MiniLM needs no build step: it comes with the text extra.
NGRAM_MODEL ?= models/ngram-v1.onnx
$(NGRAM_MODEL): banditd/features/ngram.py | $(STAMP)
	$(PY) -m banditd.features.ngram $@

models: $(NGRAM_MODEL)  ## ONNX models for text features (n-gram file; MiniLM via the text extra)

.PHONY: models
.PHONY: install redis-bin run proto proto-check fmt lint typecheck pytest test bench
.PHONY: image deploy-render deploy-check

# -- adapter paging simulation (docs/paging.md) ---------------------------------------------------
sim-paging: $(STAMP)  ## POLAR/POLAR+ vs LRU/LFU/static/oracle: summary.json + paging.png
	$(PY) simulations/paging.py --horizon 50000 --seeds 5 --out simulations/out/paging

# -- fleet plan (docs/scale.md) ---------------------------------------------------------------
sim-scale: $(STAMP)  ## workers and Redis shards for 100k Route+Feedback/s, checked by simulation
	$(PY) simulations/scale.py

.PHONY: sim-paging sim-scale
# -- simulator (docs/simulator.md) ------------------------------------------------------------
SCENARIOS := $(wildcard simulations/*.toml)
SIM_OUT ?= simulations/out

sim: $(STAMP)  ## run every shipped scenario: plots + summaries in simulations/out (minutes; not CI)
	$(PY) -m pip install -q -e '.[sim,bench,ope]'
	$(PY) -m pip install -q --no-deps obp==0.4.1
	@for s in $(SCENARIOS); do echo "== $$s"; $(VENV)/bin/banditd simulate $$s --out $(SIM_OUT) || exit 1; done
	$(VENV)/bin/banditd tune simulations/linear.toml --out $(SIM_OUT) --write-config $(SIM_OUT)/linear.best.toml

.PHONY: install redis-bin run proto proto-check fmt lint typecheck pytest test bench sim
# --- redis backend (docs/redis.md) ---
redis-route-cost: $(STAMP) redis-bin  ## round trips and bytes per Route on the Redis backend
	$(PY) -m tests.integration.route_cost

.PHONY: install redis-bin run proto proto-check fmt lint typecheck pytest test bench
.PHONY: redis-route-cost
# --- fault suite (tests/chaos/__init__.py; also part of `make test`) ---
CHAOS_DECISIONS ?= 10000
chaos: $(STAMP) redis-bin  ## 2 replicas on one Redis: Redis killed, paused, a replica killed
	$(PY) -m tests.chaos --decisions $(CHAOS_DECISIONS)

.PHONY: chaos
