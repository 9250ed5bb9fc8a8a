# Two commands do all the set-up: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test deps bench clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

deps: $(STAMP)

run: $(STAMP)
	scripts/system-deps.sh run
	$(PY) -m devstack

test: $(STAMP)
	scripts/system-deps.sh test
	$(PY) -m pytest

bench: $(STAMP)
	scripts/system-deps.sh bench
	$(PY) -m bench.token
	$(PY) -m bench.calls
	$(PY) -m bench.push

clean:
	rm -rf $(VENV) .pytest_cache
