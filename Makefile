# The README's two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint

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

test: $(VENV)/.dev
	INTERLOCK_REQUIRE_SERVICES=$${INTERLOCK_REQUIRE_SERVICES-1} $(BIN)/pytest -q

lint: $(VENV)/.dev
	$(BIN)/ruff check .
