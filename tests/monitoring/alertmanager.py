"""A real Alertmanager for tests (Debian's prometheus-alertmanager), stopped by PID."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.local_server import free_port, wait_for_port

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = REPO_ROOT / "prometheus" / "alertmanager.yml"


def binary() -> str:
    found = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if found is None:
        pytest.skip(
            "Alertmanager not installed (apt-get install prometheus-alertmanager); .ci/run does"
        )
    return found


def alertmanager_config(webhook_url: str, token_file: Path, target: Path) -> Path:
    """The committed config, pointed at a test's ml-api and timed for a test: the routes and
    receivers are the real ones, only the URL, the token's file and the waits differ."""
    config: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    config["route"] |= {"group_wait": "1s", "group_interval": "1s", "repeat_interval": "2s"}
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook_url
            hook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    target.write_text(yaml.safe_dump(config))
    return target


@contextmanager
def running_alertmanager(root: Path, config: Path) -> Iterator[str]:
    """Yields the ``host:port`` Prometheus sends alerts to."""
    port = free_port()
    process = subprocess.Popen(
        [
            binary(),
            f"--config.file={config}",
            f"--storage.path={root / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # one instance: no gossip port
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)
