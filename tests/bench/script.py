"""Running a benchmark script as its user does, and reading the Markdown table it prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_script(name: str, *args: str, timeout: float = 240) -> str:
    """``python bench/<name> <args>`` from the project root; its output (the test fails, with
    everything the script printed, when it exits non-zero)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def table_rows(text: str) -> list[list[str]]:
    """The cells of every row of the Markdown tables in ``text`` (headers left out)."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        if set(line) <= set("|-: "):  # the separator under a header
            rows.pop()
            continue
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows
