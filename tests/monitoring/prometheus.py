"""A real Prometheus server for tests: started on a free port of 127.0.0.1, stopped by PID."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.local_server import free_port, wait_for_port, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
ALERTS = REPO_ROOT / "prometheus" / "alerts.yml"


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body: dict[str, Any] = response.json()
        assert body.get("status") == "success", f"{expr!r}: {body.get('error')}"
        return body

    def has_data(self, expr: str) -> bool:
        result = self.query(expr)["data"]["result"]
        return bool(result) if isinstance(result, list) else result is not None

    def wait_for(self, expr: str, timeout: float = 60) -> None:
        wait_until(lambda: self.has_data(expr), timeout, f"Prometheus has data for {expr!r}")

    def firing(self, alertname: str) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.url}/api/v1/alerts", timeout=10).json()
        return [
            a
            for a in body["data"]["alerts"]
            if a["labels"].get("alertname") == alertname and a["state"] == "firing"
        ]


def fast_rules(source: Path, target: Path, windows: dict[str, str]) -> Path:
    """The alert rules with every ``for:`` at 0 and range windows shortened (``windows``:
    e.g. {"[1h]": "[2m]"}), so a test sees them fire in seconds. The logic is what promtool
    tests with the real windows (prometheus/alerts_test.yml)."""
    document = yaml.safe_load(source.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "0s"
            for long, short in windows.items():
                rule["expr"] = rule["expr"].replace(long, short)
    target.write_text(yaml.safe_dump(document))
    return target


@contextmanager
def running_prometheus(
    root: Path,
    targets: Sequence[str],
    rule_files: Sequence[Path] = (ALERTS,),
    scrape_seconds: float = 1,
    alertmanager: str | None = None,
) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not installed (apt-get install prometheus); .ci/run installs it")
    port = free_port()
    config: dict[str, Any] = {
        "global": {"scrape_interval": f"{scrape_seconds}s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [{"job_name": "ml-api", "static_configs": [{"targets": list(targets)}]}],
    }
    if alertmanager is not None:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
        yield Prometheus(f"http://127.0.0.1:{port}")
    finally:
        process.terminate()
        process.wait(timeout=30)
