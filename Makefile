VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test fast lint openapi bench
install:
	python3 -m venv $(VENV) && $(VENV)/bin/pip install -e '.[test,bench]'
test:
	$(PY) -m pytest -n auto
fast:
	$(PY) -m pytest -m "not db"
lint:
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy && $(VENV)/bin/lint-imports
openapi:
	$(PY) -m app.openapi
bench:
	$(PY) -m bench --write bench/latest.md
