# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run

.PHONY: run test soak bench conformance lint setup clean

# The dev tools (pytest, mypy, ruff, playwright, ...) only for test, lint and bench; `make run` needs
# the runtime requirements and honcho alone (requirements-run.txt).
$(STAMP): requirements.txt requirements-run.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $(STAMP) $(RUN_STAMP)

$(RUN_STAMP): requirements.txt requirements-run.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements-run.txt
	touch $(RUN_STAMP)

setup: $(STAMP)

## run: the five sample services and the gateway (gunicorn + gevent) on :3000
run: $(RUN_STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" PORT=$${PORT:-3000} $(BIN)/honcho -f Procfile.dev start -p $${PORT:-3000}

## test: the whole suite (unit, real redis-server, end-to-end through gunicorn)
test: $(STAMP)
	$(BIN)/pytest

## soak: the long chaos and resource suites
soak: $(STAMP)
	$(BIN)/pytest -m soak -o addopts="" -p no:cacheprovider -q

## bench: wrk benchmarks; starts redis, an upstream, baselines and the gateway itself (prints the table)
bench: $(STAMP)
	$(BIN)/python -m bench

## conformance: the public HTTP caching test suite through the gateway, per store (needs node; not part of make test)
conformance: $(STAMP)
	$(BIN)/python -m bench.conformance

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy gateway blueprints app.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
