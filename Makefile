# The two commands of README.md: `make serve` and `make test`. Everything else is a helper.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: serve test lint format typecheck protos bench bench-cpu soak overload clean

## Set up (first run only) and serve the embedded default model: OpenAI API on :8000, gRPC on :50051.
serve: $(VENV)/.installed
	$(BIN)/tensorchat serve $(ARGS)

## Set up (first run only) and run the whole test suite.
test: $(VENV)/.installed-dev
	scripts/fetch-test-assets
	$(BIN)/pytest $(PYTEST_ARGS)

## ruff (lint + format check) and mypy.
lint: typecheck
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## mypy over the packages and tests listed in pyproject.toml.
typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

## The stack benchmark (synthetic engine -> inference service -> facade), e.g.
## `make bench ARGS="--streams 64 --duration 20 --json stack.json"` (benchmarks/README.md).
bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/stack.py $(ARGS)

## Issue 20's goals as ratios against a floor server, about 3-5 minutes on 2 cores, e.g.
## `make bench-cpu ARGS="--tree /tmp/base"` for a before/after (benchmarks/README.md).
bench-cpu: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/request_cpu.py --json benchmarks/results/request-cpu.json $(ARGS)

## Reliability under failures (not part of `make test`, a few minutes): streams while replicas
## are killed, frozen and drained, with hostile connections; fails on any hung, duplicated or
## leaked request (benchmarks/soak.py).
soak: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/soak.py $(ARGS)

## Overload (not part of `make test`, about two minutes): a replica saturated by expensive
## streams, and requests queued past the progress timeout; fails if any request is not served
## or the replica is taken out of routing (benchmarks/overload.py).
overload: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/overload.py $(ARGS)

format: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## Regenerate tensorchat/v1/*_pb2*.py from protos/ (a test fails when they are stale).
protos: $(VENV)/.installed-dev
	$(BIN)/python -m tensorchat.protogen

# scripts/setup itself touches these when it succeeds, whoever runs it.
$(VENV)/.installed: pyproject.toml scripts/setup
	scripts/setup

$(VENV)/.installed-dev: pyproject.toml scripts/setup
	scripts/setup --dev

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
