"""What each live-experiment feature costs per request, in-process (no HTTP, no wrk): the
app is driven directly through ASGI, so the figures are microseconds of one worker and swing
less with the machine's load than wrk's requests/s do.

Scenarios as in ``experiments.py``: one model; a 90/10 split of the same model under two tags;
a 100 % shadow; feedback on (records flushed to SQLite). The scenarios run in turn, ``--rounds``
times. Per scenario: the latency of a request (median over the rounds of each round's mean,
p50 and p99) and the CPU time of the whole process per request (every thread, so the shadow
calls and the feedback flushes are in it; the lowest of the rounds, the usual estimate of a
cost on a noisy machine), with its share of the single model's: what throughput a saturated
worker keeps. ``--profile SCENARIO`` adds a pyinstrument profile of that scenario.

    .venv/bin/python bench/experiments_profile.py --requests 5000 --rounds 3
    .venv/bin/python bench/experiments_profile.py --requests 3000 --profile "split 90/10"
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import typer
from pydantic import SecretStr
from starlette.types import ASGIApp

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import bench_model  # noqa: E402
from experiments import ADMIN, FEEDBACK, SECOND, publish_second_tag  # noqa: E402
from inprocess import Timings, microseconds, request_times  # noqa: E402

from app.main import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402

# Every scenario PUTs its whole spec: they share one registry, so a spec left out would serve
# the previous scenario's.
SPECS: dict[str, dict[str, Any]] = {
    "single": {"primary": bench_model.TAG},
    "split 90/10": {"primary": bench_model.TAG, "candidates": [{"tag": SECOND, "weight": 10}]},
    "shadow 100%": {"primary": bench_model.TAG, "shadows": [{"tag": SECOND, "percent": 100}]},
    "feedback on": {"primary": bench_model.TAG},
}


def _timings(
    settings: Settings, spec: dict[str, Any], body: bytes, requests: int, profile: bool
) -> Timings:
    async def put_spec(app: ASGIApp) -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            answer = await http.put(
                "/deployment", json=spec, headers={"Authorization": f"Bearer {ADMIN}"}
            )
            answer.raise_for_status()

    # Every 64 requests the loop runs background work (shadows, flushes).
    run = request_times(
        create_app(settings),
        "/predict",
        body,
        requests,
        profile=profile,
        prepare=put_spec,
        yield_every=64,
    )
    return asyncio.run(run)


def main(
    requests: Annotated[int, typer.Option(min=100, max=100_000)] = 5000,
    rounds: Annotated[int, typer.Option(min=1, max=20, help="Turns of every scenario.")] = 3,
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
        feedback = base.model_copy(
            update={
                "feedback_token": SecretStr(FEEDBACK),
                "state_url": f"sqlite:///{tmp}/feedback.sqlite3",
            }
        )
        figures: dict[str, list[Timings]] = {name: [] for name in SPECS}
        for turn in range(rounds):
            for name, spec in SPECS.items():
                settings = feedback if name == "feedback on" else base
                timings = _timings(settings, spec, body, requests, False)
                figures[name].append(timings)
                print(
                    f"  round {turn + 1}: {name:<12} "
                    f"{timings.cpu_microseconds_per_request:.0f} CPU us/request",
                    flush=True,
                )
        print(_table(figures, requests))
        if profile:
            settings = feedback if profile == "feedback on" else base
            _timings(settings, SPECS[profile], body, requests, True)


def _table(figures: dict[str, list[Timings]], requests: int) -> str:
    lines = [
        f"in-process, 1 row, no HTTP: {requests} requests per run, "
        f"{len(figures['single'])} rounds; microseconds",
        "| scenario | mean | p50 | p99 | CPU per request (lowest) | CPU spread | "
        "single's CPU / this |",
        "|---|---|---|---|---|---|---|",
    ]
    single = min(t.cpu_microseconds_per_request for t in figures["single"])
    for name, runs in figures.items():
        latency = [microseconds(t.latencies) for t in runs]
        mean, p50, p99 = (statistics.median(v[i] for v in latency) for i in range(3))
        cpu = [t.cpu_microseconds_per_request for t in runs]
        spread = (max(cpu) - min(cpu)) / min(cpu)
        lines.append(
            f"| {name} | {mean:.0f} | {p50:.0f} | {p99:.0f} | {min(cpu):.1f} | "
            f"{spread:.0%} | {single / min(cpu):.1%} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    typer.run(main)
