# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run

.PHONY: run test test-repeat soak bench conformance lint setup clean

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

## test: the whole suite (unit, real redis-server, end-to-end through gunicorn), TEST_JOBS processes side by side
TEST_JOBS ?= 3
test: $(STAMP)
	$(BIN)/pytest -n $(TEST_JOBS)

## test-repeat: the whole suite COUNT times (default 20), each run in a new random order (pytest-randomly);
## ARGS narrows it (ARGS=tests/cache/test_store_redis.py). Prints one line per run and a final tally of runs.
COUNT ?= 20
ARGS ?=
test-repeat: $(STAMP)
	@logs=$$(mktemp -d -t gateway-test-repeat-XXXXXX); passed=0; failed=0; \
	for run in $$(seq 1 $(COUNT)); do \
	  seed=$$(od -An -N4 -tu4 /dev/urandom | tr -d ' '); log=$$logs/run-$$run.log; \
	  if $(BIN)/pytest -n $(TEST_JOBS) -p randomly --randomly-seed=$$seed $(ARGS) > $$log 2>&1; then \
	    passed=$$((passed + 1)); result=passed; else failed=$$((failed + 1)); result="FAILED (log: $$log)"; fi; \
	  summary=$$(tail -n 1 $$log | sed 's/=//g; s/^ *//; s/ *$$//'); \
	  echo "run $$run/$(COUNT), seed $$seed: $$result, $$summary"; \
	  case $$result in passed) rm -f $$log;; esac; \
	done; \
	echo "$$passed passed, $$failed failed"; rmdir $$logs 2>/dev/null; \
	test $$failed -eq 0

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
	$(BIN)/mypy --strict gateway
	$(BIN)/mypy blueprints app.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
