"""Cycle deployment specs of three models each on a running ``ml-api serve`` and report memory.

Publishes six experiments (three logistic-regression, three gradient-boosting) to a temporary
registry, starts one server (one worker), and PUTs ``--specs`` specs in turn, each a primary, a
candidate and a shadow drawn from the six (so models keep loading and unloading), with a few
predictions after each. RSS is read after a warm-up cycle (every model loaded once), at the end
of the cycles, and again once the spec is back to the single model the run started with: a
pool that kept unloaded models, or their batching queues, drift windows and metric children,
would grow with every cycle.

    .venv/bin/python scripts/spec_cycle_rss.py --specs 100
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import psutil
import typer

from app.registry.store import ModelRegistry
from app.serving.pool import RELEASE_AFTER_SECONDS
from tests.local_server import free_port, wait_until_ok
from tests.models import publish, sample_rows

ROOT = Path(__file__).resolve().parent.parent
TAGS = [("lr-a", "logreg"), ("hgb-a", "hgb"), ("lr-b", "logreg"), ("hgb-b", "hgb"),
        ("lr-c", "logreg"), ("hgb-c", "hgb")]  # fmt: skip


def rss_mib(pid: int) -> float:
    """RSS once the worker had time to hand back unloaded models' memory (it does so a
    second after a change, when in-flight requests are done)."""
    time.sleep(RELEASE_AFTER_SECONDS + 1)
    return float(psutil.Process(pid).memory_info().rss) / 2**20


def spec_for(i: int) -> dict[str, Any]:
    names = [tag for tag, _ in TAGS]
    primary, candidate, shadow = (names[(i + k) % len(names)] for k in (0, 1, 3))
    return {
        "primary": primary,
        "candidates": [{"tag": candidate, "weight": 20}],
        "shadows": [{"tag": shadow, "percent": 100}],
        "guard": {"enabled": False},
    }


def main(specs: Annotated[int, typer.Option(min=1, max=10_000)] = 100) -> None:
    with tempfile.TemporaryDirectory(prefix="ml-api-spec-rss-") as tmp:
        registry = ModelRegistry(str(Path(tmp) / "registry"))
        for index, (tag, kind) in enumerate(TAGS):
            publish(registry, tag, kind, activate=index == 0)
        token = secrets.token_hex(24)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "ML_API_REGISTRY_URL": registry.url, "ML_API_ADMIN_TOKEN": token}
        env["ML_API_LOG_LEVEL"] = "warning"
        command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
        server = subprocess.Popen([*command, "--workers", "1"], cwd=ROOT, env=env)
        try:
            wait_until_ok(f"{url}/v2/health/ready", server)
            worker = (
                psutil.Process(server.pid).children()[0].pid
                if psutil.Process(server.pid).children()
                else server.pid
            )
            headers = {"Authorization": f"Bearer {token}"}
            rows = {"instances": sample_rows(5)}
            with httpx.Client(base_url=url, timeout=120) as http:

                def cycle(i: int) -> float:
                    started = time.perf_counter()
                    http.put("/deployment", json=spec_for(i), headers=headers).raise_for_status()
                    for key in range(4):
                        answer = http.post(
                            "/predict", json=rows, headers={"X-ML-API-Key": f"k{key}"}
                        )
                        answer.raise_for_status()
                    return time.perf_counter() - started

                single = rss_mib(worker)
                for i in range(len(TAGS)):  # warm-up: every model loaded (and unloaded) once
                    cycle(i)
                warm = rss_mib(worker)
                durations = [cycle(i) for i in range(specs)]
                after = rss_mib(worker)
                http.put(
                    "/deployment", json={"primary": TAGS[0][0]}, headers=headers
                ).raise_for_status()
                back = rss_mib(worker)
        finally:
            server.terminate()
            server.wait(timeout=30)
    durations.sort()
    print(f"specs cycled: {specs} (3 models each, from {len(TAGS)} experiments)")
    print(f"change + 4 requests: p50 {durations[len(durations) // 2] * 1000:.0f} ms, "
          f"max {durations[-1] * 1000:.0f} ms")  # fmt: skip
    print(f"worker RSS: one model at start {single:.1f} MiB; after warm-up {warm:.1f} MiB; "
          f"after {specs} specs {after:.1f} MiB ({after - warm:+.1f} MiB); "
          f"back to one model {back:.1f} MiB ({back - single:+.1f} MiB vs start)")  # fmt: skip


if __name__ == "__main__":
    typer.run(main)
