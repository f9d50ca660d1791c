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

# One registry for training and serving: an absolute path, so `dvc exp run --temp` (which runs
# in a temporary copy of the repository) publishes here too.
train serve: export ML_API_REGISTRY_URL ?= $(CURDIR)/registry

HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= 1
PYTEST_ARGS ?=
# Test files run in parallel processes (pytest-xdist), each file whole in one process so its
# session servers (Prometheus, Redis, Kafka, S3) start once per process; PYTEST_WORKERS=0 runs
# everything in this process.
PYTEST_WORKERS ?= 2

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

# Stage commands run `python` from PATH: the project's venv comes first. `dvc exp run` runs in
# the workspace and needs a git commit; the baseline (logreg) is published first, so it is
# the active model of a new registry. Rerunning publishes nothing twice.
train: install
	PATH="$(CURDIR)/$(VENV_BIN):$$PATH" $(VENV_BIN)/dvc repro
	PATH="$(CURDIR)/$(VENV_BIN):$$PATH" $(VENV_BIN)/dvc exp run --temp -S model.type=hgb

run: train serve

# Without a token management is disabled; a local run makes one up so a newcomer can hot-swap
# at once (set ML_API_ADMIN_TOKEN to choose it).
serve: install
	@token="$${ML_API_ADMIN_TOKEN:-$$(python3 -c 'import secrets; print(secrets.token_hex(24))')}"; \
	echo "ml-api on http://$(HOST):$(PORT)  (docs: /docs)  admin token: $$token"; \
	ML_API_ADMIN_TOKEN="$$token" exec $(VENV_BIN)/ml-api serve --host $(HOST) --port $(PORT) --workers $(WORKERS)

test: install
	$(VENV_BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: install
	$(VENV_BIN)/ruff check .
	$(VENV_BIN)/ruff format --check .
	$(VENV_BIN)/mypy

format: install
	$(VENV_BIN)/ruff check --fix .
	$(VENV_BIN)/ruff format .
