"""Soak test: sustained /predict load on ``ml-api serve --workers 2`` while swapping models.

Starts one server on a random port of 127.0.0.1 against a registry holding at least two
experiments, runs ``--clients`` concurrent clients (asyncio + httpx) for ``--duration`` seconds
and swaps between the active experiment and another one every ``--swap-every`` seconds. Prints
requests served, non-2xx responses and transport errors (both must be 0: exit status 1
otherwise), latency percentiles overall and in the second after each swap, and the RSS of each
worker process at start and end.

    .venv/bin/python scripts/soak.py --registry-url registry --duration 180
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import psutil
import typer

from tests.local_server import free_port, wait_until_ok

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # never anything else: the soak test stays on this machine
WORKERS = 2
SWAP_WINDOW_SECONDS = 1.0


@dataclass
class Sample:
    started: float  # monotonic time the request was sent
    latency: float
    status: int  # 0 for a transport error
    tag: str | None


@dataclass
class Swap:
    started: float
    status: int
    target: str
    load_ms: float | None
    detail: str = ""


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    swaps: list[Swap] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


def _workers(server: psutil.Process, expected: int, timeout: float = 60) -> list[psutil.Process]:
    """The worker processes uvicorn spawned (not its multiprocessing helpers)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [
            child
            for child in server.children(recursive=True)
            if "spawn_main" in " ".join(child.cmdline())
        ]
        if len(found) >= expected or time.monotonic() > deadline:
            return sorted(found, key=lambda p: p.pid)
        time.sleep(0.1)


def _warm_up(url: str, token: str, tags: tuple[str, str]) -> None:
    """Let every worker load each model once, so that the start figure already holds one of
    each and growth at the end can only come from repeated swaps."""
    headers = {"Authorization": f"Bearer {token}"}
    settle = float(os.environ.get("ML_API_POLL_SECONDS", "2")) + 1.0
    with httpx.Client(base_url=url, timeout=60) as http:
        for tag in (tags[1], tags[0]):
            http.post("/replace_ml_model", json={"tag": tag}, headers=headers).raise_for_status()
            time.sleep(settle)  # the other worker follows within one poll


def _rss(processes: list[psutil.Process]) -> str:
    parts = []
    for process in processes:
        try:
            parts.append(f"pid {process.pid} {process.memory_info().rss / 2**20:.1f} MiB")
        except psutil.NoSuchProcess:
            parts.append(f"pid {process.pid} gone")
    return ", ".join(parts)


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(q * len(sorted_values)) - 1))
    return sorted_values[rank]


def _latency_line(samples: list[Sample]) -> str:
    values = sorted(s.latency * 1000 for s in samples if s.status)
    return (
        f"p50 {_percentile(values, 0.50):.1f} ms, p99 {_percentile(values, 0.99):.1f} ms "
        f"({len(values)} requests)"
    )


async def _client(url: str, instances: list[dict[str, Any]], stop_at: float, run: Run) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        i = 0
        while time.monotonic() < stop_at:
            rows = instances[i % len(instances) : i % len(instances) + 1 + i % 3]
            i += 1
            started = time.monotonic()
            try:
                response = await http.post("/predict", json={"instances": rows})
            except httpx.TransportError as exc:
                run.samples.append(Sample(started, time.monotonic() - started, 0, None))
                run.errors[type(exc).__name__] += 1
                continue
            tag = response.json().get("model_tag") if response.status_code == 200 else None
            run.samples.append(
                Sample(started, time.monotonic() - started, response.status_code, tag)
            )
            if response.status_code >= 300:
                run.errors[f"HTTP {response.status_code}: {response.text[:200]}"] += 1


async def _swapper(
    url: str, token: str, tags: tuple[str, str], every: float, stop_at: float, run: Run
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        n = 0
        next_at = time.monotonic() + every
        while next_at < stop_at:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            target = tags[(n + 1) % 2]
            n += 1
            started = time.monotonic()
            try:
                response = await http.post(
                    "/replace_ml_model", json={"tag": target}, headers=headers
                )
            except httpx.TransportError as exc:
                run.swaps.append(Swap(started, 0, target, None, type(exc).__name__))
            else:
                ok = response.status_code == 200
                run.swaps.append(
                    Swap(
                        started,
                        response.status_code,
                        target,
                        response.json()["load_ms"] if ok else None,
                        "" if ok else response.text[:200],
                    )
                )
            next_at += every


async def _soak(
    url: str,
    token: str,
    tags: tuple[str, str],
    instances: list[dict[str, Any]],
    clients: int,
    duration: float,
    swap_every: float,
) -> Run:
    run = Run()
    stop_at = time.monotonic() + duration
    await asyncio.gather(
        _swapper(url, token, tags, swap_every, stop_at, run),
        *(_client(url, instances, stop_at, run) for _ in range(clients)),
    )
    return run


def _report(run: Run, tags: tuple[str, str], duration: float) -> bool:
    """Print the figures; True when the run had no failure."""
    samples = run.samples
    served = [s for s in samples if 200 <= s.status < 300]
    non_2xx = [s for s in samples if s.status and not 200 <= s.status < 300]
    transport = [s for s in samples if not s.status]
    by_tag = Counter(s.tag for s in served)
    swaps_ok = [s for s in run.swaps if s.status == 200]
    swaps_failed = [s for s in run.swaps if s.status != 200]
    windows = [(s.started, s.started + SWAP_WINDOW_SECONDS) for s in run.swaps]
    after_swaps = [s for s in samples if any(lo <= s.started < hi for lo, hi in windows)]
    loads = sorted(s.load_ms for s in swaps_ok if s.load_ms is not None)

    print(f"requests served: {len(served)} ({len(served) / duration:.1f}/s)")
    print("served by model: " + ", ".join(f"{tag} {by_tag.get(tag, 0)}" for tag in tags))
    print(f"non-2xx responses: {len(non_2xx)}")
    print(f"transport errors: {len(transport)}")
    print(
        f"swaps: {len(swaps_ok)} ok, {len(swaps_failed)} failed; load_ms p50 "
        f"{_percentile(loads, 0.5):.0f}, max {loads[-1] if loads else float('nan'):.0f}"
    )
    print(f"latency overall: {_latency_line(samples)}")
    print(f"latency in the {SWAP_WINDOW_SECONDS:g} s after each swap: {_latency_line(after_swaps)}")
    for error, count in run.errors.most_common(10):
        print(f"  error x{count}: {error}")
    for swap in swaps_failed[:10]:
        print(f"  failed swap to {swap.target}: {swap.status} {swap.detail}")
    return not non_2xx and not transport and not swaps_failed


def main(
    registry_url: Annotated[
        str, typer.Option(help="Registry (folder or s3:// URL) with >= 2 experiments.")
    ] = str(ROOT / "registry"),
    duration: Annotated[float, typer.Option(min=1, max=3600, help="Seconds of load.")] = 180,
    swap_every: Annotated[float, typer.Option(min=0.2, help="Seconds between swaps.")] = 3,
    clients: Annotated[int, typer.Option(min=1, max=256, help="Concurrent clients.")] = 8,
) -> None:
    """Soak ``ml-api serve --workers 2`` with /predict traffic and periodic hot swaps."""
    from app.registry.store import ModelRegistry

    registry = ModelRegistry(registry_url)
    listed = [e for e in registry.list_experiments().experiments if not e.broken]
    if len(listed) < 2:
        raise typer.BadParameter(
            f"{registry_url} holds {len(listed)} usable experiment(s); the soak needs two",
            param_hint="--registry-url",
        )
    deployment = registry.read_deployment()
    active = deployment.spec.primary if deployment is not None else listed[0].tag
    tags = (active, next(e.tag for e in listed if e.tag != active))
    instances = [dict(row) for row in registry.read_meta(tags[0]).reference.instances]

    token = secrets.token_hex(24)
    port = free_port()
    url = f"http://{HOST}:{port}"
    env = {
        **os.environ,
        "ML_API_REGISTRY_URL": registry_url,
        "ML_API_ADMIN_TOKEN": token,
        "ML_API_LOG_LEVEL": "warning",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the server makes a fresh one of its own
    command = [sys.executable, "-m", "app.cli", "serve"]
    command += ["--host", HOST, "--port", str(port), "--workers", str(WORKERS)]
    with tempfile.NamedTemporaryFile(prefix="soak-server-", suffix=".log") as log:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
        try:
            wait_until_ok(f"{url}/v2/health/ready", server, timeout=120)
            workers = _workers(psutil.Process(server.pid), WORKERS)
            print(
                f"soak: {clients} clients for {duration:g} s, swapping {tags[0]} <-> {tags[1]} "
                f"every {swap_every:g} s, {len(workers)} workers on {url}"
            )
            _warm_up(url, token, tags)
            rss_at_start = _rss(workers)
            run = asyncio.run(_soak(url, token, tags, instances, clients, duration, swap_every))
            rss_at_end = _rss(workers)
            passed = _report(run, tags, duration)
            print(f"worker RSS at start (each model loaded once): {rss_at_start}")
            print(f"worker RSS at end:   {rss_at_end}")
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)
        if not passed:
            log.seek(0)
            tail = log.read().decode(errors="replace").splitlines()[-30:]
            print("server log (last lines):", *tail, sep="\n  ")
    if not passed:
        print("FAILED: some requests or swaps did not succeed")
        raise typer.Exit(1)
    print("OK: every request and every swap succeeded")


if __name__ == "__main__":
    typer.run(main)
