# The two commands of README.md: `make serve` and `make test`. Everything else is a helper.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: serve test lint format typecheck protos bench clean

## Set up (first run only) and serve the embedded default model: OpenAI API on :8000, gRPC on :50051.
serve: $(VENV)/.installed
	$(BIN)/tensorchat serve $(ARGS)

## Set up (first run only) and run the whole test suite.
test: $(VENV)/.installed-dev
	scripts/fetch-test-assets
	$(BIN)/pytest $(PYTEST_ARGS)

## ruff (lint + format check) and mypy.
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## Regenerate tensorchat/v1/*_pb2*.py from protos/ (a test fails when they are stale).
protos: $(VENV)/.installed-dev
	$(BIN)/python -m tensorchat.protogen

$(VENV)/.installed: pyproject.toml scripts/setup
	scripts/setup
	touch $@

$(VENV)/.installed-dev: pyproject.toml scripts/setup
	scripts/setup --dev
	touch $(VENV)/.installed $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
