# Two commands do all the set-up: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The recorder's page loads the Agora Web SDK from this npm package (served locally).
RECORDER_ASSETS := recorder/node_modules/.package-lock.json

.PHONY: run demo test lint deps stack-deps bench clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

$(RECORDER_ASSETS): recorder/package.json recorder/package-lock.json
	npm ci --prefix recorder --no-audit --no-fund --loglevel=error
	touch $@

deps: $(STAMP)

# Debian packages first: the recorder's npm package needs npm.
stack-deps: $(STAMP)
	scripts/system-deps.sh run
	$(MAKE) --no-print-directory $(RECORDER_ASSETS)

run: stack-deps
	$(PY) -m devstack

demo: stack-deps
	$(PY) -m devstack demo

# The layering (import-linter contracts in pyproject.toml) and ruff fail the tests too.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache

test: lint
	scripts/system-deps.sh test
	$(MAKE) --no-print-directory $(RECORDER_ASSETS)
	$(PY) -m pytest

bench: $(STAMP)
	scripts/system-deps.sh bench
	$(MAKE) --no-print-directory $(RECORDER_ASSETS)
	$(PY) -m bench.token
	$(PY) -m bench.calls
	$(PY) -m bench.races
	$(PY) -m bench.push
	$(PY) -m bench.media
	$(PY) -m bench.recorder
	$(PY) -m bench.uploads
	$(PY) -m bench.ncs
	$(PY) -m bench.analysis --part analyzer
	$(PY) -m bench.slow_clients

clean:
	rm -rf $(VENV) .pytest_cache
