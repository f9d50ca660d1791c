"""scripts/soak.py, bounded: a short soak on a temporary registry must pass."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(150)
def test_short_soak_serves_every_request_across_swaps(registry_dir: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "scripts" / "soak.py"),
            "--registry-url",
            str(registry_dir),
            "--duration",
            "8",
            "--swap-every",
            "1",
            "--clients",
            "8",
        ],
        cwd=PROJECT_ROOT,
        # Workers follow the pointer faster than the swaps come, so every worker serves both
        # models (with the default 2 s poll and a swap every second, one may never see one).
        env={**os.environ, "ML_API_POLL_SECONDS": "0.3"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert re.search(r"^non-2xx responses: 0$", run.stdout, re.MULTILINE), output
    assert re.search(r"^transport errors: 0$", run.stdout, re.MULTILINE), output
    served = re.search(r"^requests served: (\d+)", run.stdout, re.MULTILINE)
    assert served is not None, output
    assert int(served.group(1)) > 100
    swaps = re.search(r"^swaps: (\d+) ok, 0 failed", run.stdout, re.MULTILINE)
    assert swaps is not None, output
    assert int(swaps.group(1)) >= 5
    # Both models served traffic, and each worker's memory was reported twice.
    by_model = re.search(r"^served by model: base (\d+), boost (\d+)$", run.stdout, re.MULTILINE)
    assert by_model is not None, output
    assert min(int(n) for n in by_model.groups()) > 0, output
    assert len(re.findall(r"pid \d+ [\d.]+ MiB", run.stdout)) == 4
