# Two commands matter: `make serve` and `make test`. Everything they need is installed here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
PYVER := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
ARGS ?=

.PHONY: serve test lint model eval-model bench bench-triton system-deps clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade "pip>=24"

# Stamp files make a second run with nothing new to install take seconds.
$(VENV)/.installed-runtime: pyproject.toml | $(PY)
	$(PIP) install -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed-runtime
	$(PIP) install -e '.[dev]'
	@touch $@

# The Triton python backend stub embeds the system's shared libpython.
system-deps:
	@ldconfig -p | grep -q "libpython$(PYVER)\.so\.1\.0" || \
		{ apt-get update -qq && apt-get install -y -qq libpython$(PYVER) >/dev/null; }

serve: system-deps $(VENV)/.installed-runtime
	$(PY) -m a2f_triton.serve $(ARGS)

test: system-deps $(VENV)/.installed-dev
	$(PY) -m pytest $(ARGS)

lint: $(VENV)/.installed-dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

model:
	bash training/setup.sh
	$(PY) -P -m training.pipeline

eval-model:
	$(PY) -m training.evaluate

bench-triton: system-deps $(VENV)/.installed-dev
	$(PY) -m a2f_triton.bench_triton $(ARGS)

bench: system-deps $(VENV)/.installed-dev
	$(PY) -m loadtest.bench $(if $(QUICK),--quick) $(ARGS)

clean:
	rm -rf .run .pytest_cache .ruff_cache
