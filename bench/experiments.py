"""What live experiments and feedback cost: one worker, the same model in every arm.

Scenarios, each driven by wrk at 8 clients (server on core 0, wrk on core 1), each on its own
server, the runs interleaved and repeated:

- ``single``: one model, all traffic (the reference);
- ``split 90/10``: the same model published under a second tag as a 10 % candidate;
- ``shadow 100%``: the second tag as a shadow that sees every request;
- ``feedback on``: one model, with feedback enabled (prediction records flushed to SQLite).

Each run of a scenario sits between two runs of ``single`` (single, split, single, shadow,
single, feedback, single, ...): its throughput over the mean of those two neighbours is one
paired ratio, and the table gives the median of those ratios beside the best-of figures. On a
machine whose speed drifts by tens of per cent within a minute, the neighbours share the
drift; the best of each scenario's runs may come from different minutes.

Then ``/feedback`` throughput: items per second one worker joins and counts, sent in batches
of 500 by 4 concurrent clients for requests served just before.

CPU steal (from /proc/stat) is printed with every figure: this machine is shared.

    .venv/bin/python bench/experiments.py                 # about 5 minutes
    .venv/bin/python bench/experiments.py --duration 2 --repeats 1 --feedback-items 2000  # smoke
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import bench_model  # noqa: E402
from run import cpu_times, running, steal_since, wrk  # noqa: E402

from app.publishing.publish import publish_experiment  # noqa: E402
from app.registry.store import ModelRegistry  # noqa: E402
from tests.local_server import free_port  # noqa: E402

ADMIN = "bench-admin-token-0123456789"
FEEDBACK = "bench-feedback-token-0123456789"
SECOND = "bench-logreg-b"


@dataclass
class Figure:
    scenario: str
    rps: list[float]
    p99_ms: list[float]
    steal: list[float]
    # This scenario's req/s over the mean of the single-model runs just before and after it.
    paired: list[float] = field(default_factory=list)

    def row(self, reference: float | None) -> str:
        best = max(self.rps)
        spread = (max(self.rps) - min(self.rps)) / best * 100 if best else 0.0
        versus = f"{best / reference * 100:.1f} %" if reference else ""
        paired = (
            f"{statistics.median(self.paired):.1%} ({min(self.paired):.0%}–{max(self.paired):.0%})"
            if self.paired
            else ""
        )
        p99 = min(self.p99_ms)
        return (
            f"| {self.scenario} | {best:,.0f} | {spread:.1f} % | {p99:.2f} | "
            f"{statistics.median(self.p99_ms):.2f} | {versus} | {paired} | "
            f"{max(self.steal):.1f} % |"
        )


def publish_second_tag(registry_dir: Path) -> None:
    """The bench model again under another tag: same model in every arm."""
    import pandas as pd

    model, x = bench_model.fitted()
    frame = pd.DataFrame(x, columns=[f.name for f in bench_model.features()])
    publish_experiment(
        ModelRegistry(str(registry_dir)),
        tag=SECOND,
        model=model,
        features=bench_model.features(),
        training_frame=frame,
        reference_instances=[bench_model.row(x, i) for i in range(5)],
        model_type="logreg",
        params={},
        metrics={},
        git_commit=None,
        exist_ok=True,
    )


def put_spec(url: str, spec: dict[str, Any]) -> None:
    response = httpx.put(
        f"{url}/deployment", json=spec, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60
    )
    response.raise_for_status()


def run_once(figure: Figure, url: str, body: Path, duration: int) -> None:
    start = cpu_times()
    result = wrk(f"{url}/predict", body, 8, duration, "1")
    if result["errors"]:
        raise RuntimeError(f"{figure.scenario}: {int(result['errors'])} errors")
    figure.rps.append(result["rps"])
    figure.p99_ms.append(result["p99"])
    figure.steal.append(steal_since(start))
    print(
        f"  {figure.scenario:<14} {result['rps']:>8.0f} req/s  p99 {result['p99']:.2f} ms",
        flush=True,
    )


async def feedback_rate(url: str, body: dict[str, Any], items: int) -> float:
    """Items per second that /feedback accepts, for requests served just before."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        ids: list[str] = []

        async def predict(n: int) -> None:
            for _ in range(n):
                answer = await http.post("/predict", json=body)
                ids.append(answer.json()["request_id"])

        await asyncio.gather(*(predict(items // 8) for _ in range(8)))
        await asyncio.sleep(1)  # every record flushed: the figure is the join, not the wait
        batches = [ids[i : i + 500] for i in range(0, len(ids), 500)]
        headers = {"Authorization": f"Bearer {FEEDBACK}"}

        async def send(chunk: list[list[str]]) -> int:
            accepted = 0
            for batch in chunk:
                items_body = {"items": [{"request_id": i, "reward": 1.0} for i in batch]}
                answer = await http.post("/feedback", json=items_body, headers=headers)
                answer.raise_for_status()
                accepted += answer.json()["accepted"]
            return accepted

        started = time.perf_counter()
        accepted = await asyncio.gather(*(send(batches[i::4]) for i in range(4)))
        elapsed = time.perf_counter() - started
    if sum(accepted) != len(ids):
        raise RuntimeError(f"only {sum(accepted)} of {len(ids)} feedback items accepted")
    return len(ids) / elapsed


SCENARIOS: dict[str, dict[str, Any]] = {
    "single": {},
    "split 90/10": {"candidates": [{"tag": SECOND, "weight": 10}]},
    "shadow 100%": {"shadows": [{"tag": SECOND, "percent": 100}]},
    "feedback on": {},
}


def _pair(figures: dict[str, Figure]) -> None:
    """Each scenario's runs over their neighbouring single-model runs (the single runs come
    first, between every other run, and last)."""
    single = figures["single"].rps
    others = [figure for name, figure in figures.items() if name != "single"]
    for index in range(len(single) - 1):
        figure = others[index % len(others)]
        run = figure.rps[index // len(others)]
        figure.paired.append(run / ((single[index] + single[index + 1]) / 2))


def main(
    duration: Annotated[int, typer.Option(min=1, max=60, help="Seconds per run.")] = 5,
    repeats: Annotated[int, typer.Option(min=1, max=20, help="Runs per scenario.")] = 6,
    feedback_items: Annotated[int, typer.Option(min=100, help="Items for /feedback.")] = 20_000,
) -> None:
    """One server per scenario, all started first (each 1 worker on core 0, idle while the
    others are measured); the runs are interleaved (single, split, single, shadow, single,
    feedback, single, ...) so that a change in the machine's speed hits every scenario alike
    and each run can be compared with the single-model runs beside it."""
    with tempfile.TemporaryDirectory(prefix="ml-api-bench-exp-") as tmp, ExitStack() as stack:
        folder = Path(tmp)
        x = bench_model.build(folder / "registry")
        publish_second_tag(folder / "registry")
        body_path = folder / "row.json"
        body = {"instances": [bench_model.row(x, 0)]}
        body_path.write_text(json.dumps(body))
        base_env = {
            **os.environ,
            "ML_API_REGISTRY_URL": str(folder / "registry"),
            "ML_API_LOG_LEVEL": "warning",
            "ML_API_ADMIN_TOKEN": ADMIN,
        }
        urls: dict[str, str] = {}
        for name, arms in SCENARIOS.items():
            port = free_port()
            url = urls[name] = f"http://127.0.0.1:{port}"
            feedback = name == "feedback on"
            # Each server its own registry copy: a spec PUT to one must not reach the others.
            registry = folder / f"registry-{port}"
            shutil.copytree(folder / "registry", registry)
            env = base_env | {"ML_API_REGISTRY_URL": str(registry)}
            if feedback:
                env |= {
                    "ML_API_FEEDBACK_TOKEN": FEEDBACK,
                    "ML_API_STATE_URL": f"sqlite:///{folder / 'feedback.sqlite3'}",
                }
            serve = [str(ROOT / ".venv" / "bin" / "ml-api"), "serve", "--port", str(port)]
            command = ["taskset", "-c", "0", *serve, "--workers", "1"]
            stack.enter_context(running(command, f"{url}/v2/health/ready", env))
            put_spec(url, {"primary": bench_model.TAG, "guard": {"enabled": False}} | arms)
        figures = {name: Figure(name, [], [], []) for name in SCENARIOS}
        for url in urls.values():
            wrk(f"{url}/predict", body_path, 8, 2, "1")  # warm up
        single = figures["single"]
        for _ in range(repeats):
            for name in [name for name in SCENARIOS if name != "single"]:
                run_once(single, urls["single"], body_path, duration)
                run_once(figures[name], urls[name], body_path, duration)
        run_once(single, urls["single"], body_path, duration)
        _pair(figures)
        rate = asyncio.run(feedback_rate(urls["feedback on"], body, feedback_items))
        print(f"  /feedback: {rate:,.0f} items/s", flush=True)
    reference = max(figures["single"].rps)
    print()
    print(
        "| scenario (1 worker, 8 clients, 1 row) | best req/s | spread | best p99 ms "
        "| median p99 ms | best vs best single | paired with single: median (range) "
        "| max CPU steal |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, figure in figures.items():
        print(figure.row(None if name == "single" else reference))
    print(f"\n/feedback on one worker: {rate:,.0f} items/s (batches of 500, 4 clients)")


if __name__ == "__main__":
    typer.run(main)
