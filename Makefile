# Two commands matter: `make run` (install, train the default experiments, serve)
# and `make test` (install, run the whole suite). Everything else supports them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

TOOLS_DIR ?= .tools
POETRY := $(TOOLS_DIR)/bin/poetry
# The mirror plugin lets Poetry resolve through pip's own index (PIP_INDEX_URL or
# pip's default), so no index URL is ever written into pyproject.toml/poetry.lock.
export POETRY_PYPI_MIRROR_URL ?= $(shell python3 -c 'import os; from pip._internal.models.index import PyPI; print(os.environ.get("PIP_INDEX_URL") or PyPI.simple_url)')
export POETRY_VIRTUALENVS_IN_PROJECT := true
VENV_BIN := .venv/bin

HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= 1
PYTEST_ARGS ?=

.PHONY: help install train run serve test lint format bench

help:
	@echo "make run    install, train the default experiments, serve on http://$(HOST):$(PORT)"
	@echo "make test   install and run the whole test suite"
	@echo "make lint   ruff, ruff format --check, mypy --strict"

$(POETRY):
	python3 -m venv $(TOOLS_DIR)
	$(TOOLS_DIR)/bin/pip install --quiet "poetry>=2.1,<3" "poetry-plugin-pypi-mirror>=0.6"

.venv/.installed: $(POETRY) pyproject.toml poetry.lock
	$(POETRY) install --with ml,dev
	touch $@

install: .venv/.installed

train: install
	$(VENV_BIN)/dvc repro
	$(VENV_BIN)/dvc exp run -S model.type=hgb

run: train serve

serve: install
	$(VENV_BIN)/ml-api serve --host $(HOST) --port $(PORT) --workers $(WORKERS)

test: install
	$(VENV_BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(VENV_BIN)/ruff check .
	$(VENV_BIN)/ruff format --check .
	$(VENV_BIN)/mypy

format: install
	$(VENV_BIN)/ruff check --fix .
	$(VENV_BIN)/ruff format .
