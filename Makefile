VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test lint openapi bench
install:
	python3 -m venv $(VENV) && $(VENV)/bin/pip install -e '.[test,bench]'
test:
	$(PY) -m pytest
lint:
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy
openapi:
	$(PY) -m app.openapi
bench:
	$(PY) -m bench --write bench/RESULTS.md
