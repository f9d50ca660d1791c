"""A retrained experiment joins the live deployment as a shadow, through the very command the
retraining pipeline runs (``python -m ml.shadow_deploy``), on a real ``ml-api serve``: the
primary and its answers do not change, and the shadow's comparison starts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.registry.store import ModelRegistry
from tests.conftest import ADMIN_TOKEN, PROJECT_ROOT
from tests.e2e.server import Server, auth_headers
from tests.models import publish, sample_rows

pytestmark = pytest.mark.e2e


def test_a_retrained_model_enters_as_a_shadow_and_the_primary_stays(registry_dir: Path) -> None:
    with Server(str(registry_dir), env={"ML_API_SHADOW_QUEUE_SIZE": "1000"}) as server:
        rows = {"instances": sample_rows(3, offset=30)}
        before = httpx.post(f"{server.url}/predict", json=rows).json()
        # What retrain-publish does: publish, never activate.
        publish(ModelRegistry(str(registry_dir)), "abc1234-r12", "hgb")
        run = subprocess.run(
            [sys.executable, "-m", "ml.shadow_deploy", "--url", server.url, "--tag", "abc1234-r12"],
            cwd=PROJECT_ROOT,
            env={**os.environ, "ML_API_ADMIN_TOKEN": ADMIN_TOKEN},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        described = httpx.get(f"{server.url}/deployment", headers=auth_headers()).json()
        assert described["spec"]["primary"] == "base"
        assert described["spec"]["candidates"] == []
        assert described["spec"]["shadows"] == [{"tag": "abc1234-r12", "percent": 100.0}]
        after = httpx.post(f"{server.url}/predict", json=rows).json()
        assert after["model_tag"] == "base"
        assert after["predictions"] == before["predictions"]
        deadline = time.monotonic() + 10
        while True:
            figures = httpx.get(f"{server.url}/deployment", headers=auth_headers()).json()
            if figures["figures"]["shadows"][0]["rows_compared"] >= 3:
                break
            assert time.monotonic() < deadline, figures["figures"]
            time.sleep(0.1)  # the shadow scores after the answer; no event to await
