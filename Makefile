# The two commands of the README, and the ones around them.
#   make run    start web (8000), gRPC (50051), a worker and Flower (5555) in the foreground
#   make test   lint, migration check and the whole test suite
#   make bench  the benchmarks under bench/ (BENCH_QUICK=1 for a short run,
#               BENCH_SMOKE=1 for every benchmark at its smallest, as CI runs it)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PYTHONPATH := $(CURDIR)

.PHONY: run test lint format bench migrate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.run-installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.run-installed $@

$(VENV)/.bench-installed: requirements-bench.txt $(VENV)/.dev-installed
	$(BIN)/pip install --quiet -r requirements-bench.txt
	touch $@

migrate: $(VENV)/.run-installed
	$(BIN)/python manage.py migrate --no-input

run: $(VENV)/.run-installed migrate
	$(BIN)/python -m scheduler_project.run

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

format: $(VENV)/.dev-installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The tests run on PostgreSQL (each run makes a database of its own next to this one)
# and start their own redis-server.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test

test: lint
	$(BIN)/python manage.py makemigrations --check --dry-run
	DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/pytest $(PYTEST_ARGS)

bench: $(VENV)/.bench-installed
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) data
