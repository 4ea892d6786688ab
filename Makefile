# Two commands matter: `make serve` and `make test`. Everything they need is installed here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
PYVER := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
ARGS ?=

.PHONY: serve test lint lock model eval-model bench bench-triton system-deps clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade "pip>=24"

# Stamp files make a second run with nothing new to install take seconds. Every install is
# pinned by constraints.txt, so a fresh machine gets the versions the tests passed with;
# `make lock` refreshes it. The base package is the client alone; `server` adds the gateway
# and Triton, `dev` the server plus test, lint and type-check tools.
CONSTRAINTS := constraints.txt

# NVIDIA's message classes for the gRPC API go in without their dependencies (see the file).
ACE_REQUIREMENTS := ace_requirements.txt

$(VENV)/.installed-server: pyproject.toml $(CONSTRAINTS) $(ACE_REQUIREMENTS) | $(PY)
	$(PIP) install -c $(CONSTRAINTS) -e '.[server]'
	$(PIP) install --no-deps -r $(ACE_REQUIREMENTS)
	@touch $@

$(VENV)/.installed-dev: pyproject.toml $(CONSTRAINTS) $(ACE_REQUIREMENTS) | $(PY)
	$(PIP) install -c $(CONSTRAINTS) -e '.[dev]'
	$(PIP) install --no-deps -r $(ACE_REQUIREMENTS)
	@touch $@

# Resolve `.[dev]` afresh for $(PYTHON) in a scratch venv and pin everything it installed
# (the project itself excluded). Run it after changing dependencies; commit the result.
LOCK_VENV := .run/lock-venv
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip --disable-pip-version-check -q install --upgrade "pip>=24"
	$(LOCK_VENV)/bin/python -m pip --disable-pip-version-check -q install '.[dev]'
	{ echo "# pip constraints for Python $(PYVER): \`make lock\` writes this file from pyproject.toml."; \
	  $(LOCK_VENV)/bin/python -m pip freeze --exclude open-a2f; } > $(CONSTRAINTS)
	rm -rf $(LOCK_VENV)

# The Triton python backend stub embeds the system's shared libpython.
system-deps:
	@ldconfig -p | grep -q "libpython$(PYVER)\.so\.1\.0" || \
		{ apt-get update -qq && apt-get install -y -qq libpython$(PYVER) >/dev/null; }

serve: system-deps $(VENV)/.installed-server
	$(PY) -m a2f_triton.serve $(ARGS)

test: system-deps $(VENV)/.installed-dev
	$(PY) -m pytest $(ARGS)

lint: $(VENV)/.installed-dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

model:
	bash training/setup.sh
	$(PY) -P -m training.pipeline

eval-model:
	$(PY) -P -m training.evaluate

bench-triton: system-deps $(VENV)/.installed-dev
	$(PY) -m a2f_triton.bench_triton $(ARGS)

# Locust against a running gateway (`make serve` in another terminal, or any deployment:
# ARGS="--host wss://... --api-key ..."); installs Locust next to whatever is installed.
LOCUST_ARGS ?= --headless -u 32 -r 32 -t 60s --host ws://127.0.0.1:8765
$(VENV)/.installed-loadtest: pyproject.toml $(CONSTRAINTS) $(ACE_REQUIREMENTS) | $(PY)
	$(PIP) install -c $(CONSTRAINTS) -e '.[loadtest]'
	$(PIP) install --no-deps -r $(ACE_REQUIREMENTS)
	@touch $@

locust: $(VENV)/.installed-loadtest
	$(VENV)/bin/locust -f loadtest/locustfile.py $(or $(ARGS),$(LOCUST_ARGS))
.PHONY: locust

bench: system-deps $(VENV)/.installed-dev
	$(PY) -m loadtest.bench $(if $(QUICK),--quick) $(ARGS)

clean:
	rm -rf .run .pytest_cache .ruff_cache

# Several gateways behind HAProxy on loopback (a2f_triton.cluster); the tests start one too.
.PHONY: cluster haproxy
haproxy:
	@PATH="$$PATH:/usr/sbin" command -v haproxy >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq haproxy >/dev/null; }

cluster: system-deps haproxy redis-server $(VENV)/.installed-server
	$(PY) -m a2f_triton.cluster $(ARGS)

test: haproxy

# Tenants: quotas shared by several gateway processes live in Redis; the tests start a real
# redis-server (Debian's) on a free port.
redis-server:
	@command -v redis-server >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
test: redis-server

# Fairness across tenants under overload (loadtest.fairness): not part of `make test`.
bench-fairness: system-deps redis-server $(VENV)/.installed-dev
	$(PY) -m loadtest.fairness $(ARGS)
.PHONY: redis-server bench-fairness

# The benchmark kit for a bare GPU host, in .run/gpu-kit (README.md there says how to run it).
# It downloads wheels, so it is no part of `make test`; it verifies itself offline at the end.
# It packs one a2f_net version, the highest (ARGS="--model_version N" or A2F_MODEL_VERSION: N).
.PHONY: gpu-kit
gpu-kit: $(VENV)/.installed-dev
	$(PY) -m gpu_kit.build $(ARGS)

# The demo page's browser tests (tests/gateway/test_demo.py) drive Debian's Chromium, headless,
# through the DevTools protocol (no Node packages; Debian's nodejs is not pulled in).
chromium:
	@command -v chromium >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
test: chromium
.PHONY: chromium

# The API docs viewer at /schema: Swagger UI from npm (pinned, checked against its registry
# hash), served by the gateway itself, never from a CDN; NOTICE holds its licence.
SWAGGER_UI_VERSION := 5.36.0
SWAGGER_UI_SHA512 := Lt6/Kb0gXmLdiabLhvso4VdJP9V7qJWB0zh0gzeXUV3+CMOTzMmvpJRSXN7EAjfwixwmoi9ezDbLHiexC7lA9A==
DOCS_ASSETS := gateway/web/docs_assets
SWAGGER_UI_FILES := swagger-ui-bundle.js swagger-ui-standalone-preset.js swagger-ui.css \
	swagger-ui-bundle.js.LICENSE.txt swagger-ui-standalone-preset.js.LICENSE.txt LICENSE NOTICE
$(DOCS_ASSETS)/.swagger-ui-$(SWAGGER_UI_VERSION):
	rm -rf .run/npm $(DOCS_ASSETS) && mkdir -p .run/npm $(DOCS_ASSETS)
	cd .run/npm && npm pack --silent swagger-ui-dist@$(SWAGGER_UI_VERSION) >/dev/null
	test "$$(openssl dgst -sha512 -binary .run/npm/swagger-ui-dist-$(SWAGGER_UI_VERSION).tgz \
		| base64 -w0)" = "$(SWAGGER_UI_SHA512)"
	tar xzf .run/npm/swagger-ui-dist-$(SWAGGER_UI_VERSION).tgz -C .run/npm
	cd .run/npm/package && cp $(SWAGGER_UI_FILES) $(CURDIR)/$(DOCS_ASSETS)/
	@touch $@
# Without npm the service still runs: /schema/openapi.json answers, /schema has no viewer.
docs-assets:
	@if command -v npm >/dev/null; then \
		$(MAKE) --no-print-directory $(DOCS_ASSETS)/.swagger-ui-$(SWAGGER_UI_VERSION); \
	else \
		echo "warning: npm not found: /schema will have no viewer (/schema/openapi.json still answers)"; \
	fi
serve test cluster: docs-assets
.PHONY: docs-assets

# Monitoring (deploy/monitoring/): Debian's Prometheus and promtool. `make monitor-check` runs
# promtool's checks and a live scrape of a stack under load (tests/test_monitoring.py, which
# `make test` runs too).
prometheus:
	@command -v promtool >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq prometheus >/dev/null; }
test: prometheus
monitor-check: system-deps prometheus $(VENV)/.installed-dev
	$(PY) -m pytest -q tests/test_monitoring.py $(ARGS)
.PHONY: prometheus monitor-check
