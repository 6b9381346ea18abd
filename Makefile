# The two set-up commands in the README are `make demo` and `make test`; everything they need
# is installed by the targets below on a fresh machine (Python 3.11, Node 20, git).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install sandbox-deps demo demo-github eval-demo test test-postgres lint bench bench-smoke

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $@

# `npm install` from the committed lock rather than `npm ci`: qwen-code and opencode declare
# optional packages for other platforms (darwin, win32, arm64) that the registry here does not
# resolve, so the lock cannot list them and `npm ci` refuses it as out of sync; `npm install`
# installs exactly the locked versions for this platform and leaves the lock unchanged.
node_modules/.installed: package.json package-lock.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

sandbox-deps:
	scripts/ensure-sandbox

install: $(VENV)/.installed node_modules/.installed sandbox-deps

demo: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py demo

# The GitHub path on a loopback stand-in (no GitHub account): issue -> draft PR -> review -> round.
demo-github: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py demo --github

# The evaluation on the bundled sample (demo/eval-sample/): mine it, run it with the real claude CLI
# against the scripted model server, print resolve rate, $ per instance and per resolved instance.
eval-demo: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py eval_demo

test: install
	scripts/ensure-chromium
	$(VENV)/bin/pytest -n 2

# The suite on PostgreSQL (DATABASE_URL, default the local `test` database): the tests that touch
# the database. The others give the same result on any database and run in `make test`.
test-postgres: install
	scripts/ensure-chromium
	DATABASE_URL=$${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test} TACX_TESTS_DATABASE_ONLY=1 $(VENV)/bin/pytest -n 2

# Every bench script in its --smoke mode (figures meaningless; it only proves none has rotted).
bench-smoke: install
	$(VENV)/bin/pytest -n 2 -m bench tests/test_bench_smoke.py

lint: install
	$(VENV)/bin/ruff check .
