# The README's two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint services

$(BIN)/interlock: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.dev: $(BIN)/interlock
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/interlock
	$(BIN)/interlock demo

# Real services for the integration tests (README.md, "Tests"): PostgreSQL from
# the OS packages (installed only as root, only if missing) and the Kafka broker jars from
# Maven Central (cached). Best effort: the test fixtures report what is still missing.
services:
	@if [ -z "$${INTERLOCK_POSTGRES-}" ] && [ "$$(id -u)" = 0 ] \
	    && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then \
	    scripts/postgres-local.sh install; fi
	@if [ "$$(id -u)" = 0 ] && [ ! -x /usr/bin/chromium ]; then \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; fi
	@if [ -z "$${INTERLOCK_KAFKA-}" ]; then \
	    scripts/kafka-local.sh fetch >/dev/null || echo "make services: Kafka jars not fetched" >&2; fi

test: services $(VENV)/.dev
	INTERLOCK_REQUIRE_SERVICES=$${INTERLOCK_REQUIRE_SERVICES-1} $(BIN)/pytest -q

lint: $(VENV)/.dev
	$(BIN)/ruff check .
