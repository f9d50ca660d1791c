"""Benchmark ml-api against MLServer on the same fitted models, driven by wrk.

Two models (``bench_model.py``): the light pipeline (scaler + logistic regression) and a heavy
200-iteration HistGradientBoosting classifier, 30 numeric features. For each: ml-api with one
worker, ml-api with two, MLServer's scikit-learn runtime with and without adaptive batching;
single rows at each client count and 100-row requests at 8 clients. The servers are up at once,
all pinned to core 0, and wrk (on core 1, so the load generator does not steal the server's
CPU) drives one at a time: each point gets ``--repeats`` rounds of one run per server, in an
order rotated each round, so that a drift of this shared machine's load over minutes hits every
server alike. The table gives each point's best run, the spread, and the CPU steal seen. Two
workers share both cores with wrk, and their runs alternate with the one-worker server's, so
the scaling table compares runs seconds apart. Every figure comes from wrk's own latency
histogram.

    .venv/bin/python bench/run.py                    # both models, ml-api and MLServer
    .venv/bin/python bench/run.py --skip-peer --duration 2 --clients 1 --models light \
        --repeats 1                                  # smoke run
    .venv/bin/python bench/run.py --workload oip     # the same OIP requests to both servers

The ``oip`` workload sends the very same Open Inference Protocol bodies (a 2-D FP64 tensor of
1 or 100 rows, asking for ``predict_proba``) to ``/v2/models/ml-api/infer`` of ml-api and of
MLServer (whose model is named ``ml-api`` too), and the same rows to ml-api's ``/predict``.

MLServer and its scikit-learn runtime are installed into their own venv (``bench/.peer-venv``,
ignored by git) on first use, from the package index pip is configured with.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import psutil
import sklearn
import typer

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import bench_model  # noqa: E402

from tests.local_server import free_port, stop_process, wait_until_ok  # noqa: E402

T = TypeVar("T")
PEER_VENV = BENCH / ".peer-venv"
PEER_PACKAGES = ["mlserver", "mlserver-sklearn", f"scikit-learn=={sklearn.__version__}", "joblib"]
RESULT = re.compile(
    r"RESULT rps=(?P<rps>[\d.]+) p50_ms=(?P<p50>[\d.]+) p99_ms=(?P<p99>[\d.]+) "
    r"errors=(?P<errors>\d+) non2xx_seen=(?P<non2xx>\d+) requests=(?P<requests>\d+)"
)


@dataclass
class Measurement:
    """One point: the best of its repeated runs, and how far the others were from it."""

    server: str
    workload: str
    clients: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    rss_mib: float
    model: str = "light"
    runs: tuple[float, ...] = ()
    steal_percent: float = 0.0

    @property
    def spread_percent(self) -> float:
        """(best - worst) / best of the repeated runs."""
        return 100 * (max(self.runs) - min(self.runs)) / max(self.runs) if self.runs else 0.0


def cpu_times() -> tuple[int, int]:
    """(steal, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    return fields[7], sum(fields)


def steal_since(start: tuple[int, int]) -> float:
    """Percent of CPU time the hypervisor gave to other machines since ``start``."""
    steal, total = cpu_times()
    return 100 * (steal - start[0]) / max(1, total - start[1])


def tree_rss_mib(pid: int) -> float:
    process = psutil.Process(pid)
    members = [process, *process.children(recursive=True)]
    return sum(p.memory_info().rss for p in members) / 2**20


@contextmanager
def running(command: list[str], ready_url: str, env: dict[str, str]) -> Iterator[int]:
    log = tempfile.NamedTemporaryFile(prefix="bench-server-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(command, env=env, stdout=log, stderr=log, cwd=ROOT)
    try:
        wait_until_ok(ready_url, process, timeout=120)
        yield process.pid
    except Exception:
        log.flush()
        sys.stderr.write(Path(log.name).read_text()[-3000:])
        raise
    finally:
        stop_process(process)
        log.close()
        Path(log.name).unlink(missing_ok=True)


def wrk(url: str, body: Path, clients: int, duration: int, cores: str) -> dict[str, float]:
    env = {**os.environ, "WRK_BODY": str(body)}
    command = ["taskset", "-c", cores, "wrk", "-t1", f"-c{clients}", f"-d{duration}s"]
    command += ["--latency", "-s", str(BENCH / "predict.lua"), url]
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    match = RESULT.search(output)
    if match is None:
        raise RuntimeError(f"wrk printed no result:\n{output}")
    return {key: float(value) for key, value in match.groupdict().items()}


@dataclass(frozen=True)
class Target:
    """One server endpoint of a side-by-side run, with its request body per workload."""

    server: str
    url: str
    pid: int
    bodies: dict[str, Path]


def rotation(items: Sequence[T], turn: int) -> list[T]:
    """``items`` in the order of round ``turn``: A B C, then B C A, ... (A B, then B A)."""
    first = turn % len(items)
    return [*items[first:], *items[:first]]


def measure_side_by_side(
    targets: list[Target],
    clients: list[int],
    duration: int,
    repeats: int,
    model: str = "light",
    every_size_at_every_count: bool = False,
) -> list[Measurement]:
    """Each point on every target that has a body for it, ``repeats`` rounds of one run per
    target, the order rotated each round (A B C, then B C A, ...), so that a drift of the
    machine's load over minutes hits every server alike. All servers are up at once on core 0,
    wrk on core 1. The best run is kept, the spread and the CPU steal recorded; 100-row bodies
    at 8 clients only unless ``every_size_at_every_count``."""
    results = []
    workloads = list(dict.fromkeys(w for target in targets for w in target.bodies))
    for workload in workloads:
        present = [target for target in targets if workload in target.bodies]
        counts = clients if workload == "1 row" or every_size_at_every_count else [8]
        for count in counts:
            runs: dict[str, list[dict[str, float]]] = {t.server: [] for t in present}
            steal = dict.fromkeys(runs, 0.0)
            for target in present:  # warm up
                wrk(target.url, target.bodies[workload], count, min(2, duration), "1")
            for turn in range(repeats):
                for target in rotation(present, turn):
                    start = cpu_times()
                    runs[target.server].append(
                        wrk(target.url, target.bodies[workload], count, duration, "1")
                    )
                    steal[target.server] = max(steal[target.server], steal_since(start))
            results += [
                best_of(t.server, workload, count, runs[t.server], t.pid, model, steal[t.server])
                for t in present
            ]
    return results


def best_of(
    server: str,
    workload: str,
    clients: int,
    runs: list[dict[str, float]],
    pid: int,
    model: str,
    steal: float,
) -> Measurement:
    """The point's best run, with the others' spread; printed as it is measured."""
    best = max(runs, key=lambda run: run["rps"])
    print(
        f"  {model:<5} {server:<28} {workload:<8} c={clients:<3} "
        f"{' / '.join(format(run['rps'], '.0f') for run in runs)} req/s, steal {steal:.1f} %",
        flush=True,
    )
    return Measurement(
        server=server,
        workload=workload,
        clients=clients,
        rps=best["rps"],
        p50_ms=best["p50"],
        p99_ms=best["p99"],
        errors=int(sum(run["errors"] for run in runs)),
        rss_mib=tree_rss_mib(pid),
        model=model,
        runs=tuple(run["rps"] for run in runs),
        steal_percent=steal,
    )


ONE_WORKER_PAIRED = "ml-api (1 worker, paired)"
TWO_WORKERS = "ml-api (2 workers)"


def measure_scaling(
    serve: list[str],
    env: dict[str, str],
    one_worker: tuple[str, int],
    body: Path,
    counts: list[int],
    duration: int,
    repeats: int,
    model: str,
) -> list[Measurement]:
    """ml-api with 2 workers against the running 1-worker server, single rows, their runs
    alternated so that a drift of the machine's load over minutes hits both alike.

    The 1-worker server is on core 0 with wrk on core 1; the two workers are not pinned and
    share both cores with wrk (the machine has two), which understates their scaling.
    """
    port = free_port()
    ready = f"http://127.0.0.1:{port}/v2/health/ready"
    url = f"http://127.0.0.1:{port}/predict"
    one_url, one_pid = one_worker
    results: list[Measurement] = []
    with running([*serve, "--port", str(port), "--workers", "2"], ready, env) as pid:
        for count in counts:
            wrk(url, body, count, min(2, duration), "0,1")  # warm up
            one: list[dict[str, float]] = []
            two: list[dict[str, float]] = []
            steal = 0.0
            for _ in range(repeats):
                start = cpu_times()
                one.append(wrk(one_url, body, count, duration, "1"))
                two.append(wrk(url, body, count, duration, "0,1"))
                steal = max(steal, steal_since(start))
            results.append(best_of(ONE_WORKER_PAIRED, "1 row", count, one, one_pid, model, steal))
            results.append(best_of(TWO_WORKERS, "1 row", count, two, pid, model, steal))
    return results


def median_ratio(mine: Measurement, other: Measurement) -> float:
    """The median of ``mine``'s runs over ``other``'s, round by round (runs of one round are
    seconds apart, so a slow phase of the machine hits both: steadier than best ÷ best)."""
    return statistics.median(a / b for a, b in zip(mine.runs, other.runs, strict=True))


def ratio_cells(
    mine: Measurement, other: Measurement, spec: str = ".2f", paired: bool = True
) -> str:
    """Two table cells: best ÷ best, and the median of the round-by-round ratios (left empty
    when the two were not measured in the same rounds)."""
    median = format(median_ratio(mine, other), spec) if paired else ""
    return f"{format(mine.rps / other.rps, spec)} | {median}"


def scaling_table(results: list[Measurement]) -> str:
    """2 workers against 1 from the alternated runs: best against best, and the median of
    the run-by-run ratios."""
    paired = {(m.model, m.clients): m for m in results if m.server == ONE_WORKER_PAIRED}
    lines = [
        "| model | clients | 1 worker req/s (runs) | 2 workers req/s (runs) | best ÷ best "
        "| median of run ratios | CPU steal |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in results:
        one = paired.get((m.model, m.clients))
        if m.server != TWO_WORKERS or one is None:
            continue
        lines.append(
            f"| {m.model} | {m.clients} | {' / '.join(f'{r:,.0f}' for r in one.runs)} | "
            f"{' / '.join(f'{r:,.0f}' for r in m.runs)} | {ratio_cells(m, one)} | "
            f"{m.steal_percent:.1f} % |"
        )
    return "\n".join(lines)


def write_bodies(folder: Path, x: Any) -> tuple[dict[str, Path], dict[str, Path]]:
    """Request bodies for ml-api (rows by feature name) and for MLServer (V2 tensors)."""
    ours, theirs = {}, {}
    for name, count in (("1 row", 1), ("100 rows", 100)):
        rows = [bench_model.row(x, i) for i in range(count)]
        ours[name] = folder / f"ml-api-{count}.json"
        ours[name].write_text(json.dumps({"instances": rows}))
        tensor = {
            "name": "input-0",
            "shape": [count, bench_model.N_FEATURES],
            "datatype": "FP64",
            "data": [float(v) for row in x[:count] for v in row],
        }
        theirs[name] = folder / f"mlserver-{count}.json"
        theirs[name].write_text(
            json.dumps({"inputs": [tensor], "outputs": [{"name": "predict_proba"}]})
        )
    return ours, theirs


def write_oip_bodies(folder: Path, x: Any) -> tuple[dict[str, Path], dict[str, Path]]:
    """The same rows as /predict bodies and as OIP bodies (one request for both servers)."""
    predict, oip = {}, {}
    for name, count in (("1 row", 1), ("100 rows", 100)):
        rows = [bench_model.row(x, i) for i in range(count)]
        predict[name] = folder / f"predict-{count}.json"
        predict[name].write_text(json.dumps({"instances": rows}))
        oip[name] = folder / f"oip-{count}.json"
        oip[name].write_bytes(bench_model.oip_body(x, count))
    return predict, oip


def ensure_peer_venv() -> Path:
    python = PEER_VENV / "bin" / "python"
    if not (PEER_VENV / "bin" / "mlserver").exists():
        print(f"installing the peer into {PEER_VENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEER_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
    return PEER_VENV / "bin" / "mlserver"


def mlserver_folder(folder: Path, port: int, batching: bool, name: str) -> Path:
    """A model repository and settings for one MLServer on ``port``, in a folder of its own."""
    root = folder / ("mlserver-batching" if batching else "mlserver")
    shutil.rmtree(root, ignore_errors=True)
    model_dir = root / name
    model_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(folder / "model.joblib", model_dir / "model.joblib")
    settings: dict[str, Any] = {
        "name": name,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib"},
    }
    if batching:
        settings |= {"max_batch_size": 32, "max_batch_time": 0.002}
    (model_dir / "model-settings.json").write_text(json.dumps(settings))
    server = {
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "host": "127.0.0.1",
        "parallel_workers": 0,
    }
    (root / "settings.json").write_text(json.dumps(server))
    return root


PEER = "MLServer (sklearn)"
PEER_BATCHING = "MLServer (adaptive batching)"


def start_peers(
    stack: ExitStack, folder: Path, bodies: dict[str, Path], name: str, batching: list[bool]
) -> list[Target]:
    """MLServer on core 0 serving ``folder/model.joblib`` as ``name``, once per batching
    setting, each kept running until ``stack`` closes."""
    mlserver = ensure_peer_venv()
    peer_env = {**os.environ, "PATH": f"{PEER_VENV / 'bin'}:{os.environ['PATH']}"}
    targets = []
    for batched in batching:
        port = free_port()
        config = mlserver_folder(folder, port, batched, name)
        url = f"http://127.0.0.1:{port}/v2/models/{name}"
        command = ["taskset", "-c", "0", str(mlserver), "start", str(config)]
        pid = stack.enter_context(running(command, f"{url}/ready", peer_env))
        targets.append(Target(PEER_BATCHING if batched else PEER, f"{url}/infer", pid, bodies))
    return targets


def table(results: list[Measurement]) -> str:
    """Per model, workload and client count, ml-api against the best MLServer configuration
    (100-row requests compare rows/s, which is the same ratio as requests/s): best against
    best, and the median of the round-by-round ratios against that configuration (a slow
    phase of the machine hits both runs of a round)."""
    best_peer: dict[tuple[str, str, int], Measurement] = {}
    for m in results:
        key = (m.model, m.workload, m.clients)
        if not m.server.startswith("ml-api") and (
            key not in best_peer or m.rps > best_peer[key].rps
        ):
            best_peer[key] = m
    lines = [
        "| model | server | workload | clients | req/s (best) | spread | p50 ms | p99 ms "
        "| errors | RSS MiB | CPU steal | × best MLServer | × it, median of rounds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in results:
        peer = best_peer.get((m.model, m.workload, m.clients))
        ratio = " | "
        if peer and m.server.startswith("ml-api"):
            # The scaling runs alternate with each other, not with the peers' rounds.
            ratio = ratio_cells(m, peer, paired=m.server not in (ONE_WORKER_PAIRED, TWO_WORKERS))
        lines.append(
            f"| {m.model} | {m.server} | {m.workload} | {m.clients} | {m.rps:,.0f} | "
            f"{m.spread_percent:.0f} % | {m.p50_ms:.2f} | {m.p99_ms:.2f} | {m.errors} | "
            f"{m.rss_mib:.0f} | {m.steal_percent:.1f} % | {ratio} |"
        )
    return "\n".join(lines)


ML_API_OIP = "ml-api /v2/.../infer"
ML_API_PREDICT = "ml-api /predict"


def oip_table(results: list[Measurement]) -> str:
    """Each figure with ml-api's OIP throughput against MLServer's and against /predict's:
    best against best, and the median of the round-by-round ratios."""
    points = {(m.server, m.workload, m.clients): m for m in results}
    lines = [
        "| server | workload | clients | req/s | p50 ms | p99 ms | errors | RSS MiB "
        "| × MLServer | × MLServer, median of rounds | ÷ /predict | ÷ /predict, median of rounds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in results:
        peer = points.get((PEER, m.workload, m.clients))
        predict = points.get((ML_API_PREDICT, m.workload, m.clients))
        mine = m.server == ML_API_OIP
        versus_peer = ratio_cells(m, peer) if mine and peer else " | "
        versus_predict = ratio_cells(m, predict, ".0%") if mine and predict else " | "
        lines.append(
            f"| {m.server} | {m.workload} | {m.clients} | {m.rps:,.0f} | {m.p50_ms:.2f} | "
            f"{m.p99_ms:.2f} | {m.errors} | {m.rss_mib:.0f} | {versus_peer} | {versus_predict} |"
        )
    return "\n".join(lines)


def run_oip(
    folder: Path,
    x: Any,
    counts: list[int],
    duration: int,
    repeats: int,
    skip_peer: bool,
    env: dict[str, str],
) -> list[Measurement]:
    """The same OIP requests to ml-api and MLServer; /predict on the same rows."""
    predict_bodies, oip_bodies = write_oip_bodies(folder, x)
    port = free_port()
    serve = [str(ROOT / ".venv" / "bin" / "ml-api"), "serve", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    with ExitStack() as stack:
        command = ["taskset", "-c", "0", *serve, "--workers", "1"]
        pid = stack.enter_context(running(command, f"{base}/v2/health/ready", env))
        targets = [
            Target(ML_API_OIP, f"{base}/v2/models/ml-api/infer", pid, oip_bodies),
            Target(ML_API_PREDICT, f"{base}/predict", pid, predict_bodies),
        ]
        if not skip_peer:
            targets += start_peers(stack, folder, oip_bodies, "ml-api", [False])
        return measure_side_by_side(targets, counts, duration, repeats, "light", True)


def run_predict(
    folder: Path,
    kind: str,
    counts: list[int],
    duration: int,
    repeats: int,
    skip_peer: bool,
    two_workers: bool,
    runtime: str,
) -> list[Measurement]:
    """ml-api's /predict (1 and 2 workers) and MLServer (with and without adaptive batching)
    on the same fitted model of ``kind``."""
    model_dir = folder / kind
    model_dir.mkdir()
    x = bench_model.build(model_dir / "registry", joblib_path=model_dir / "model.joblib", kind=kind)
    env = {
        **os.environ,
        "ML_API_REGISTRY_URL": str(model_dir / "registry"),
        "ML_API_RUNTIME": runtime,
        "ML_API_LOG_LEVEL": "warning",
    }
    ours, theirs = write_bodies(model_dir, x)
    port = free_port()
    serve = [str(ROOT / ".venv" / "bin" / "ml-api"), "serve", "--port", str(port)]
    ready = f"http://127.0.0.1:{port}/v2/health/ready"
    predict = f"http://127.0.0.1:{port}/predict"
    with running(["taskset", "-c", "0", *serve, "--workers", "1"], ready, env) as pid:
        targets = [
            Target("ml-api (1 worker)", predict, pid, ours),
            # The very bytes MLServer gets (its OIP tensor), to ml-api's own OIP endpoint.
            Target(
                "ml-api /v2 (1 worker, peer's body)",
                f"http://127.0.0.1:{port}/v2/models/ml-api/infer",
                pid,
                {"100 rows": theirs["100 rows"]},
            ),
        ]
        with ExitStack() as peers:
            if not skip_peer:
                targets += start_peers(peers, model_dir, theirs, "bench", [False, True])
            results = measure_side_by_side(targets, counts, duration, repeats, kind)
        if two_workers:
            results += measure_scaling(
                [str(ROOT / ".venv" / "bin" / "ml-api"), "serve"],
                env,
                (predict, pid),
                ours["1 row"],
                counts,
                duration,
                repeats,
                kind,
            )
    return results


def main(
    duration: Annotated[int, typer.Option(min=1, max=120, help="Seconds per run.")] = 10,
    clients: Annotated[str, typer.Option(help="Comma-separated client counts.")] = "1,8,32",
    skip_peer: Annotated[bool, typer.Option(help="Measure ml-api only.")] = False,
    two_workers: Annotated[bool, typer.Option(help="Also run ml-api --workers 2.")] = True,
    runtime: Annotated[str, typer.Option(help="ML_API_RUNTIME for ml-api.")] = "auto",
    workload: Annotated[
        str, typer.Option(help="predict: /predict vs MLServer; oip: the same OIP requests.")
    ] = "predict",
    models: Annotated[
        str, typer.Option(help="light (logistic regression), heavy (200-iteration HGB), or both.")
    ] = "light,heavy",
    repeats: Annotated[int, typer.Option(min=1, max=10, help="Runs per point.")] = 2,
) -> None:
    counts = [int(c) for c in clients.split(",")]
    if workload not in ("predict", "oip"):
        raise typer.BadParameter("--workload is predict or oip")
    kinds = [kind.strip() for kind in models.split(",") if kind.strip()]
    if not kinds or set(kinds) - set(bench_model.TAGS):
        raise typer.BadParameter("--models: light, heavy, or both comma-separated")
    results: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="ml-api-bench-") as tmp:
        folder = Path(tmp)
        if workload == "oip":
            x = bench_model.build(folder / "registry", joblib_path=folder / "model.joblib")
            env = {
                **os.environ,
                "ML_API_REGISTRY_URL": str(folder / "registry"),
                "ML_API_RUNTIME": runtime,
                "ML_API_LOG_LEVEL": "warning",
            }
            results = run_oip(folder, x, counts, duration, repeats, skip_peer, env)
            print()
            print(oip_table(results))
            if any(m.errors for m in results):
                raise typer.Exit(1)
            return
        for kind in kinds:
            results += run_predict(
                folder, kind, counts, duration, repeats, skip_peer, two_workers, runtime
            )
    print()
    print(table(results))
    if any(m.server == TWO_WORKERS for m in results):
        print()
        print(scaling_table(results))
    # The peer's errors are figures of the peer (MLServer times out under load); ours fail.
    if any(m.errors for m in results if m.server.startswith("ml-api")):
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
