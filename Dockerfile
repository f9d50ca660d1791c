# ml-api: FastAPI real-time inference service.
#
#   docker build -t ml-api .
#   docker build --build-arg BASE_IMAGE=ml-api-base:bookworm -t ml-api .   # no Docker Hub access
#   docker run -p 8000:8000 -v "$PWD/registry:/data/registry" ml-api
#
# Two stages built on the same BASE_IMAGE (any Debian-like image with python3 3.11 and the
# venv module): the builder installs exactly the versions pinned in poetry.lock, hash-checked,
# into /opt/venv; the runtime stage copies only that venv, with no Poetry and no build tools.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS builder

# Package index of the build environment. Empty means pip's default; an empty
# PIP_INDEX_URL falls back to POETRY_PYPI_MIRROR_URL (the index the Makefile gives Poetry).
ARG PIP_INDEX_URL=""
ARG PIP_EXTRA_INDEX_URL=""
ARG POETRY_PYPI_MIRROR_URL=""
ARG POETRY_VERSION=2.5.1
ARG POETRY_PLUGIN_EXPORT_VERSION=1.10.1

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DEFAULT_TIMEOUT=120 \
    PYTHONDONTWRITEBYTECODE=1

SHELL ["/bin/sh", "-eu", "-c"]
WORKDIR /src

# Poetry only reads the lock here (export makes no network call and never re-resolves).
RUN PIP_INDEX_URL="${PIP_INDEX_URL:-${POETRY_PYPI_MIRROR_URL}}"; export PIP_INDEX_URL; \
    python3 -m venv /opt/poetry; \
    /opt/poetry/bin/pip install \
        "poetry==${POETRY_VERSION}" "poetry-plugin-export==${POETRY_PLUGIN_EXPORT_VERSION}"

COPY pyproject.toml poetry.lock ./
# Runtime dependencies only (no ml/dev groups), every file checked against the lock's hashes.
RUN PIP_INDEX_URL="${PIP_INDEX_URL:-${POETRY_PYPI_MIRROR_URL}}"; export PIP_INDEX_URL; \
    /opt/poetry/bin/poetry export --only main --format requirements.txt \
        --output /tmp/requirements.txt; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install --no-deps --require-hashes --requirement /tmp/requirements.txt

# The project itself, as a wheel (provides the `ml-api` console script).
COPY README.md ./
COPY app ./app
COPY ml ./ml
RUN /opt/poetry/bin/poetry build --format wheel --output /tmp/dist; \
    /opt/venv/bin/pip install --no-deps /tmp/dist/*.whl; \
    /opt/venv/bin/pip uninstall --yes pip


FROM ${BASE_IMAGE} AS runtime

ARG APP_UID=10001

# Settings: the CLI and the app read ML_API_* (see app/settings.py). The registry is a
# mounted folder by default; point ML_API_REGISTRY_URL at s3://bucket/prefix in production.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ML_API_HOST=0.0.0.0 \
    ML_API_PORT=8000 \
    ML_API_WORKERS=1 \
    ML_API_REGISTRY_URL=/data/registry \
    PROMETHEUS_MULTIPROC_DIR=/tmp/metrics

SHELL ["/bin/sh", "-eu", "-c"]
RUN groupadd --gid "${APP_UID}" ml-api; \
    useradd --uid "${APP_UID}" --gid ml-api --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin ml-api; \
    install -d -o ml-api -g ml-api /data/registry /tmp/metrics

COPY --from=builder /opt/venv /opt/venv

WORKDIR /srv/ml-api
USER ${APP_UID}:${APP_UID}
EXPOSE 8000

# Ready means "a model is loaded": an instance without a model reports unhealthy.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v2/health/ready' % os.environ.get('ML_API_PORT', '8000'), timeout=4)"]

# Exec form: the server is PID 1 and receives SIGTERM directly; uvicorn then stops accepting
# connections and finishes in-flight requests before exiting. Extra flags can follow
# `docker run IMAGE`, e.g. `--workers 2`.
ENTRYPOINT ["ml-api", "serve"]
