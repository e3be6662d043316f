# mcpgate: `make run` serves on SQLite at once; `make test` runs the whole suite (SQLite, then PostgreSQL).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# `make run BIND=host:port` overrides the address; otherwise gunicorn takes MCPGATE_BIND from the
# environment, then from the .env file (deploy/gunicorn.conf.py), so the real environment wins.
BIND ?=
# The local settings file the app loads (mcpgate.env.load_env_file): MCPGATE_ENV_FILE or .env.
ENV_FILE := $(or $(MCPGATE_ENV_FILE),.env)
# The port the URLs written to a new .env use.
PORT := $(lastword $(subst :, ,$(or $(BIND),$(MCPGATE_BIND),127.0.0.1:8000)))

.PHONY: run test test-sqlite test-postgres soak bench install-wrk lint typecheck check venv e2e-tools clean

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

venv: $(VENV)/.installed

# Third-party clients for tests/e2e (mcp-remote, the MCP conformance suite, Node 22 to run them),
# pinned by tests/e2e/node/package-lock.json; reinstalled only when that changes.
E2E_NODE := tests/e2e/node
$(E2E_NODE)/node_modules/.installed: $(E2E_NODE)/package.json $(E2E_NODE)/package-lock.json
	cd $(E2E_NODE) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Python MCP servers the gateway's tests run as stdio upstreams, in a virtualenv of their own (they pin
# their own `mcp`, which need not be ours).
E2E_UPSTREAMS := tests/e2e/upstreams
$(E2E_UPSTREAMS)/.venv/.installed: $(E2E_UPSTREAMS)/requirements.txt
	test -x $(E2E_UPSTREAMS)/.venv/bin/python || $(PYTHON) -m venv $(E2E_UPSTREAMS)/.venv
	$(E2E_UPSTREAMS)/.venv/bin/python -m pip install --quiet --disable-pip-version-check -r $(E2E_UPSTREAMS)/requirements.txt
	touch $@

e2e-tools: $(E2E_NODE)/node_modules/.installed $(E2E_UPSTREAMS)/.venv/.installed

# A local .env with a random SECRET_KEY, loopback URLs and a key for upstream credentials, written once,
# never committed. It is not
# sourced here: the settings load it under the real environment (SECRET_KEY=… make run wins).
$(ENV_FILE):
	@echo "SECRET_KEY=$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))')" > $@
	@echo "MCPGATE_INTERNAL_URL=http://127.0.0.1:$(PORT)" >> $@
	@echo "MCPGATE_PUBLIC_URL=http://localhost:$(PORT)" >> $@
	@echo "MCPGATE_UPSTREAM_KEYS=$$($(PYTHON) -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())')" >> $@
	@echo "wrote $@ (local settings; edit freely)"

# /metrics merges every worker's values through PROMETHEUS_MULTIPROC_DIR (deploy/gunicorn.conf.py empties
# it at start); without it each scrape would see one worker's numbers only.
run: venv $(ENV_FILE)
	$(PY) manage.py migrate --noinput && \
	PROMETHEUS_MULTIPROC_DIR="$${PROMETHEUS_MULTIPROC_DIR:-$(CURDIR)/cache/metrics}" \
	exec $(VENV)/bin/gunicorn -c deploy/gunicorn.conf.py $(if $(BIND),--bind $(BIND)) mcpgate.asgi:application

test: venv e2e-tools lint typecheck test-sqlite test-postgres

test-sqlite: venv
	env -u DATABASE_URL -u MCPGATE_TEST_DATABASE_URL $(VENV)/bin/pytest $(PYTEST_ARGS)

test-postgres: venv
	$(PY) -m tests.pgcluster $(VENV)/bin/pytest $(PYTEST_ARGS)

# Bounded soak, not part of `make test`: 60 s, 50 concurrent clients, loopback only, on a throw-away
# PostgreSQL cluster with two gunicorn workers, and a 3 s database outage halfway (bench/soak.py).
# Needs the PostgreSQL binaries. E.g. make soak SOAK_ARGS="--seconds 20 --markdown /tmp/soak.md".
SOAK_ARGS ?=
soak: venv
	$(PY) -m bench.soak $(SOAK_ARGS)

# The benchmark of issue 11, not part of `make test`: /mcp, OAuth and the gateway next to their reference
# points, loopback only, a throw-away PostgreSQL cluster, wrk as the load generator (installed if missing);
# about 7 minutes on 2 cores. Regenerates BENCHMARKS.md and bench/plots/*.png (bench/run.py). A quick look:
# make bench BENCH_ARGS="--seconds 1 --runs 1 --out /tmp/bench.md --plots /tmp/bench-plots".
BENCH_ARGS ?=
$(VENV)/.bench-installed: $(VENV)/.installed requirements-bench.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	touch $@

# wrk from Debian's packages: as root directly, otherwise through sudo; elsewhere, say how.
install-wrk:
	@if command -v apt-get >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq wrk; \
	else echo "wrk not found: install it from your system's packages (https://github.com/wg/wrk)" >&2; exit 1; fi

bench: venv
	@command -v wrk >/dev/null || $(MAKE) -s --no-print-directory install-wrk
	@$(MAKE) -s --no-print-directory $(VENV)/.bench-installed
	$(PY) -m bench.run $(BENCH_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	SECRET_KEY=typecheck MCPGATE_INTERNAL_URL=http://127.0.0.1:8000 $(VENV)/bin/mypy mcpgate audit identity oauth_ext console gateway mcp_bridge notes

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(E2E_NODE)/node_modules $(E2E_UPSTREAMS)/.venv
