"""Fixtures of the batch tests: settings pointing at a registry, and a place for files."""

from __future__ import annotations

import uuid
from pathlib import Path

import boto3
import pytest

from app.settings import Settings


@pytest.fixture
def batch_settings(registry_dir: Path) -> Settings:
    return Settings(registry_url=str(registry_dir))


@pytest.fixture
def s3_settings(s3_registry_url: str) -> Settings:
    return Settings(registry_url=s3_registry_url)


@pytest.fixture
def s3_data(s3_endpoint: str) -> str:
    """A fresh bucket for input and output files."""
    bucket = f"data-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    return f"s3://{bucket}"
