# Two commands: `make run` starts the platform, `make test` passes the tests.
# Both bootstrap .venv (and the system packages the tests need) idempotently.
.PHONY: run test test-unit bootstrap system-deps lint bench clean

VENV ?= .venv
PY := $(VENV)/bin/python

bootstrap:
	@bash scripts/bootstrap.sh

system-deps:
	@bash scripts/system-deps.sh

run: bootstrap
	@$(VENV)/bin/tuneloop models import-default --quiet
	@$(VENV)/bin/tuneloop serve

test: bootstrap system-deps
	@$(VENV)/bin/tuneloop models import-default --quiet
	@$(PY) -m pytest $(PYTEST_ARGS)

test-unit: bootstrap
	@$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

lint: bootstrap
	@$(VENV)/bin/ruff check tuneloop services serving training monitoring tests benchmarks
	@$(VENV)/bin/lint-imports
	@$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache
