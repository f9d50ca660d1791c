"""Swap the active model many times on a running ``ml-api serve`` and report its memory.

Starts one server (one worker) on 127.0.0.1 against a registry holding at least two
experiments, keeps light /predict traffic going, swaps back and forth ``--swaps`` times and
prints RSS before and after: a deployment that leaked old models would grow by the size
of a model per swap.

    .venv/bin/python scripts/swap_rss.py --registry-url registry --swaps 200
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import psutil
import typer

from tests.local_server import free_port, wait_until_ok

ROOT = Path(__file__).resolve().parent.parent


def _rss_mb(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / 2**20


def _reference_row(registry_url: str, tag: str) -> dict[str, Any]:
    from app.registry.store import ModelRegistry

    return dict(ModelRegistry(registry_url).read_meta(tag).reference.instances[0])


def main(
    registry_url: Annotated[str, typer.Option(help="Registry with >= 2 experiments.")] = str(
        ROOT / "registry"
    ),
    swaps: Annotated[int, typer.Option(min=2, max=10_000)] = 200,
) -> None:
    token = secrets.token_hex(24)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "ML_API_REGISTRY_URL": registry_url, "ML_API_ADMIN_TOKEN": token}
    env["ML_API_LOG_LEVEL"] = "warning"
    command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", "1"]
    server = subprocess.Popen(command, cwd=ROOT, env=env)
    try:
        wait_until_ok(f"{url}/v2/health/ready", server)
        with httpx.Client(base_url=url, timeout=60) as http:
            tags = [e["tag"] for e in http.get("/get_experiment_metas").json() if not e["broken"]]
            if len(tags) < 2:
                raise typer.BadParameter("the registry needs at least two experiments")
            a, b = tags[0], tags[1]
            headers = {"Authorization": f"Bearer {token}"}
            instances = [_reference_row(registry_url, a)]
            # Warm up both models once, so the first figure includes a model of each kind.
            for tag in (a, b, a):
                http.post("/replace_ml_model", json={"tag": tag}, headers=headers)
            before = _rss_mb(server.pid)
            started = time.monotonic()
            loads: list[float] = []
            for i in range(swaps):
                target = b if i % 2 == 0 else a
                response = http.post("/replace_ml_model", json={"tag": target}, headers=headers)
                response.raise_for_status()
                loads.append(response.json()["load_ms"])
                predicted = http.post("/predict", json={"instances": instances})
                predicted.raise_for_status()
            after = _rss_mb(server.pid)
            elapsed = time.monotonic() - started
        loads.sort()
        print(f"swaps: {swaps} between {a} and {b} in {elapsed:.1f} s")
        print(f"load_ms: p50 {loads[len(loads) // 2]:.0f}, max {loads[-1]:.0f}")
        print(f"RSS before: {before:.1f} MiB, after: {after:.1f} MiB ({after - before:+.1f} MiB)")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    typer.run(main)
