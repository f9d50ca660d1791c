"""Fixtures shared by the monitoring tests (Grafana dashboards, Prometheus rules)."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path to promtool; skips the test when it is not installed."""
    path = shutil.which("promtool")
    if path is None:
        pytest.skip(
            "promtool not found on PATH (Debian: apt-get install prometheus; or a Prometheus "
            "release tarball): cannot check the rules or PromQL syntax offline"
        )
    return path
