"""What each live-experiment feature costs per request, in-process (no HTTP, no wrk): the
app is driven directly through ASGI, so the figures are CPU microseconds of one worker and do
not swing with the machine's load the way wrk's requests/s do.

Scenarios as in ``experiments.py``: one model; a 90/10 split of the same model under two tags;
a 100 % shadow; feedback on (records flushed to SQLite). ``--profile SCENARIO`` adds a
pyinstrument profile of that scenario.

    .venv/bin/python bench/experiments_profile.py --requests 5000
    .venv/bin/python bench/experiments_profile.py --requests 3000 --profile "split 90/10"
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import typer
from asgi_lifespan import LifespanManager
from pydantic import SecretStr

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import bench_model  # noqa: E402
from experiments import ADMIN, FEEDBACK, SECOND, publish_second_tag  # noqa: E402

from app.main import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402

# Every scenario PUTs its whole spec: they share one registry, so a spec left out would serve
# the previous scenario's.
SPECS: dict[str, dict[str, Any] | None] = {
    "single": {"primary": bench_model.TAG},
    "split 90/10": {"primary": bench_model.TAG, "candidates": [{"tag": SECOND, "weight": 10}]},
    "shadow 100%": {"primary": bench_model.TAG, "shadows": [{"tag": SECOND, "percent": 100}]},
    "feedback on": {"primary": bench_model.TAG},
}
WARM_UP = 300


async def _timings(
    settings: Settings, spec: dict[str, Any] | None, body: bytes, requests: int, profile: bool
) -> list[float]:
    app = create_app(settings)
    scope: dict[str, Any] = {
        "type": "http", "method": "POST", "path": "/predict", "raw_path": b"/predict",
        "query_string": b"", "root_path": "", "scheme": "http", "http_version": "1.1",
        "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    statuses: list[int] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    timings: list[float] = []
    profiler = None
    async with LifespanManager(app) as manager:
        if spec is not None:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
                answer = await http.put(
                    "/deployment", json=spec, headers={"Authorization": f"Bearer {ADMIN}"}
                )
                answer.raise_for_status()
        for i in range(requests + WARM_UP):
            if i == WARM_UP and profile:
                from pyinstrument import Profiler

                profiler = Profiler(interval=0.0001, async_mode="disabled")
                profiler.start()
            started = time.perf_counter()
            await manager.app(dict(scope, state={}), receive, send)
            if i >= WARM_UP:
                timings.append(time.perf_counter() - started)
            if i % 64 == 0:
                await asyncio.sleep(0)  # background work (shadows, flushes) gets its turn
    if profiler is not None:
        profiler.stop()
        print(profiler.output_text(unicode=True, color=False, show_all=False))
    assert set(statuses) == {200}, set(statuses)
    return timings


def main(
    requests: Annotated[int, typer.Option(min=100, max=100_000)] = 5000,
    profile: Annotated[str, typer.Option(help="A scenario to profile.")] = "",
) -> None:
    if profile and profile not in SPECS:
        raise typer.BadParameter(f"--profile: one of {', '.join(SPECS)}")
    with tempfile.TemporaryDirectory() as tmp:
        registry = Path(tmp) / "registry"
        x = bench_model.build(registry)
        publish_second_tag(registry)
        body = orjson.dumps({"instances": [bench_model.row(x, 0)]})
        base = Settings(
            registry_url=str(registry), log_level="warning", admin_token=SecretStr(ADMIN)
        )
        print("in-process, microseconds per request (1 row, no HTTP)")
        print("| scenario | mean | p50 | p99 |")
        print("|---|---|---|---|")
        feedback = base.model_copy(
            update={
                "feedback_token": SecretStr(FEEDBACK),
                "state_url": f"sqlite:///{tmp}/feedback.sqlite3",
            }
        )
        for name, spec in SPECS.items():
            settings = feedback if name == "feedback on" else base
            timings = sorted(asyncio.run(_timings(settings, spec, body, requests, False)))
            mean = statistics.fmean(timings) * 1e6
            p50 = timings[len(timings) // 2] * 1e6
            p99 = timings[int(len(timings) * 0.99)] * 1e6
            print(f"| {name} | {mean:.0f} | {p50:.0f} | {p99:.0f} |", flush=True)
        if profile:
            settings = feedback if profile == "feedback on" else base
            asyncio.run(_timings(settings, SPECS[profile], body, requests, True))


if __name__ == "__main__":
    typer.run(main)
