# metreg: `make run` to try it, `make test` to check it. `make help` lists everything.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

export DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/metreg
export REDIS_URL    ?= redis://127.0.0.1:6379/0

.PHONY: help install run serve worker migrate demo test fuzz lint format typecheck check openapi bench explain drills clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml constraints.txt
	@test -n "$(PYTHON)" || { echo "Python 3.11 is needed"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,bench]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install metreg with its pinned dependencies

migrate: install ## Create the database if missing and apply pending migrations
	$(BIN)/metreg migrate --create-database

demo: migrate ## Seed the demo enterprise (once) and print its keys
	$(BIN)/metreg demo

run: demo ## Install, migrate, seed the demo, then serve the API and run the worker until Ctrl-C
	@$(BIN)/metreg worker & worker=$$!; \
	trap 'kill $$worker 2>/dev/null; wait $$worker 2>/dev/null' EXIT; \
	$(BIN)/metreg serve

worker: install ## Run the background worker only (plans, dispatches and delivers notices)
	$(BIN)/metreg worker

serve: install ## Serve the API only (METREG_HOST, METREG_PORT)
	$(BIN)/metreg serve

# Two processes: the tests wait on PostgreSQL about half the time, and each worker has its own database.
TEST_WORKERS ?= 2

test: install ## Run every test against real PostgreSQL and Redis (own databases, dropped after; TEST_WORKERS)
	$(BIN)/pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

FUZZ_EXAMPLES ?= 1000

fuzz: install ## Fuzz every API operation from the OpenAPI document, deeper than `make test` (FUZZ_EXAMPLES)
	METREG_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest tests/fuzz $(PYTEST_ARGS)

lint: install ## ruff: lint and formatting
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install ## Format and autofix with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install ## mypy --strict on the service code
	$(BIN)/mypy

check: lint typecheck test ## Lint, types and tests

openapi: install ## Write the OpenAPI document to openapi.json
	$(BIN)/metreg openapi > openapi.json

BENCH_ARGS ?=

bench: install ## design.md §9's targets side by side: reads, lists, import, planner, delivery, RSS (own databases; BENCH_ARGS=--small)
	$(BIN)/python -m bench $(BENCH_ARGS)

explain: install ## EXPLAIN the list filters, every other list and the planner on large registers, and what new instruments cost (own databases)
	$(BIN)/python -m bench.explain_filters
	$(BIN)/python -m bench.explain_lists
	$(BIN)/python -m bench.explain_planner
	$(BIN)/python -m bench.import_cost

drills: install ## Fault drills on throwaway servers: worker SIGKILL, Redis and PostgreSQL restarts, receiver time-outs (~3 min)
	$(BIN)/python -m drills $(DRILLS)

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
