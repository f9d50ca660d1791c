"""Two revisions of ml-api side by side: did a change make the service faster or slower?

On this shared machine the same point moves by 20-50 % between runs minutes apart, so two
`run.py` results taken before and after a change cannot tell a 10 % effect. This script serves
both revisions at once, each with 1 worker on core 0 and the same fitted model, and drives
them with wrk on core 1 in alternated runs (base, head, head, base, ...). Each pair of runs is
seconds apart, so a drift of the machine hits both alike; the table gives every run and the
median of the pair-by-pair ratios, with the CPU steal seen.

    .venv/bin/python bench/ab.py --base HEAD~1                 # working tree against HEAD~1
    .venv/bin/python bench/ab.py --base main --model heavy --clients 1,8,32 --pairs 5
    .venv/bin/python bench/ab.py --base HEAD~1 --endpoint oip --rows 100

The base revision is checked out into a temporary git worktree and run with this checkout's
virtualenv, so it must not need other dependencies than the working tree's.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import orjson
import typer

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import bench_model  # noqa: E402
from run import cpu_times, rotation, running, steal_since, wrk  # noqa: E402

from tests.local_server import free_port  # noqa: E402

# Runs `ml-api serve` from the code under the first argument, whatever the venv has installed.
SERVE = (
    "import sys; sys.path.insert(0, sys.argv[1]); sys.argv = ['ml-api', *sys.argv[2:]]; "
    "from app.cli import cli; cli()"
)
ENDPOINTS = {"predict": "/predict", "oip": "/v2/models/ml-api/infer"}


@dataclass
class Pairs:
    """The alternated runs of one client count."""

    clients: int
    base: list[dict[str, float]] = field(default_factory=list)
    head: list[dict[str, float]] = field(default_factory=list)
    steal_percent: float = 0.0

    def ratios(self) -> list[float]:
        return [h["rps"] / b["rps"] for b, h in zip(self.base, self.head, strict=True)]


@contextmanager
def worktree(revision: str) -> Iterator[Path]:
    """``revision`` checked out into a temporary folder, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="ml-api-ab-")) / "base"
    git = ["git", "-C", str(ROOT)]
    subprocess.run([*git, "worktree", "add", "--detach", str(folder), revision], check=True)
    try:
        yield folder
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(folder)], check=False)


def code_root(env: dict[str, str], root: Path) -> Path:
    """Where ``app`` is imported from when served from ``root`` (checked, not assumed)."""
    script = "import sys; sys.path.insert(0, sys.argv[1]); import app; print(app.__file__)"
    command = [sys.executable, "-c", script, str(root)]
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return Path(output.stdout.strip()).parent.parent


def body_file(folder: Path, kind: str, endpoint: str, rows: int) -> Path:
    x = bench_model.build(folder / "registry", kind=kind)
    path = folder / f"{endpoint}-{rows}.json"
    if endpoint == "oip":
        path.write_bytes(bench_model.oip_body(x, rows))
    else:
        path.write_bytes(orjson.dumps({"instances": [bench_model.row(x, i) for i in range(rows)]}))
    return path


def measure(urls: dict[str, str], body: Path, clients: int, pairs: int, duration: int) -> Pairs:
    for url in urls.values():
        wrk(url, body, clients, 1, "1")  # warm up
    result = Pairs(clients)
    for i in range(pairs):
        start = cpu_times()
        for name in rotation(["base", "head"], i):
            getattr(result, name).append(wrk(urls[name], body, clients, duration, "1"))
        result.steal_percent = max(result.steal_percent, steal_since(start))
        print(
            f"  c={clients:<3} base {result.base[-1]['rps']:,.0f}  head "
            f"{result.head[-1]['rps']:,.0f} req/s  steal {steal_since(start):.1f} %",
            flush=True,
        )
    return result


def table(results: list[Pairs]) -> str:
    lines = [
        "| clients | base req/s (runs) | head req/s (runs) | head ÷ base, median of pairs "
        "| pair ratios | p99 ms base / head (median) | errors | CPU steal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ratios = r.ratios()
        runs = [" / ".join(format(run["rps"], ",.0f") for run in side) for side in (r.base, r.head)]
        p99 = [statistics.median(run["p99"] for run in side) for side in (r.base, r.head)]
        errors = sum(int(run["errors"]) for run in (*r.base, *r.head))
        lines.append(
            f"| {r.clients} | {runs[0]} | {runs[1]} | {statistics.median(ratios):.2f} | "
            f"{min(ratios):.2f}–{max(ratios):.2f} | {p99[0]:.2f} / {p99[1]:.2f} | {errors} | "
            f"{r.steal_percent:.1f} % |"
        )
    return "\n".join(lines)


def main(
    base: Annotated[str, typer.Option(help="Git revision to compare the working tree with.")],
    model: Annotated[str, typer.Option(help="light or heavy (bench_model.py).")] = "heavy",
    endpoint: Annotated[str, typer.Option(help="predict (JSON rows) or oip (a tensor).")] = (
        "predict"
    ),
    rows: Annotated[int, typer.Option(min=1, max=1000, help="Rows per request.")] = 1,
    clients: Annotated[str, typer.Option(help="Comma-separated client counts.")] = "1,8,32",
    pairs: Annotated[int, typer.Option(min=1, max=20, help="Alternated pairs per point.")] = 5,
    duration: Annotated[int, typer.Option(min=1, max=60, help="Seconds per run.")] = 4,
) -> None:
    if model not in bench_model.TAGS:
        raise typer.BadParameter("--model is light or heavy")
    if endpoint not in ENDPOINTS:
        raise typer.BadParameter("--endpoint is predict or oip")
    counts = [int(c) for c in clients.split(",")]
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ml-api-ab-")))
        body = body_file(folder, model, endpoint, rows)
        env = {
            **os.environ,
            "ML_API_REGISTRY_URL": str(folder / "registry"),
            "ML_API_LOG_LEVEL": "warning",
        }
        roots = {"base": stack.enter_context(worktree(base)), "head": ROOT}
        urls = {}
        for name, root in roots.items():
            if code_root(env, root) != root:
                raise RuntimeError(f"the {name} server would not run the code in {root}")
            port = free_port()
            command = ["taskset", "-c", "0", sys.executable, "-c", SERVE, str(root)]
            command += ["serve", "--port", str(port), "--workers", "1"]
            ready = f"http://127.0.0.1:{port}/v2/health/ready"
            stack.enter_context(running(command, ready, {**env, "PYTHONPATH": str(root)}))
            urls[name] = f"http://127.0.0.1:{port}{ENDPOINTS[endpoint]}"
        print(f"base {base} against the working tree: {model} model, {endpoint}, {rows} row(s)")
        results = [measure(urls, body, count, pairs, duration) for count in counts]
    print()
    print(table(results))


if __name__ == "__main__":
    typer.run(main)
