"""Running promtool, the Prometheus checker, from the monitoring tests."""

from __future__ import annotations

import subprocess
from pathlib import Path


def run_promtool(
    promtool: str, *args: str | Path, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``promtool args...``; the caller reads the return code and output."""
    return subprocess.run(
        [promtool, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )
