"""Benchmark of batch scoring: rows/s on one core and peak RSS, per model and input format.

Generates penguin-like rows once (the Palmer penguins resampled with noise and a share of
missing values, plus an ``id`` column) as Parquet and CSV, publishes the baseline (logistic
regression) and gradient-boosting experiments trained by the pipeline's own estimators with
``params.yaml``, then runs ``ml-api score`` on each pinned to one core (``taskset``) and
prints a table. Rows/s is the run's own figure from its summary (reading, validating,
scoring, writing, assembling; model load included); rows per CPU-second divides by the run's
CPU time instead, which tells what the core does when other processes share it; wall time
adds the process start-up.
Peak RSS is the scoring process's maximum resident set, from the kernel (``wait4``).

    .venv/bin/python bench/batch.py                        # 1,000,000 rows (a few minutes)
    .venv/bin/python bench/batch.py --rows 100000          # smoke run
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import palmerpenguins
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import typer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.publishing.publish import publish_experiment  # noqa: E402
from app.registry import MISSING_CATEGORY, FeatureSpec  # noqa: E402
from app.registry.store import ModelRegistry  # noqa: E402
from ml.estimators import build_pipeline, single_threaded  # noqa: E402
from ml.params import load_params  # noqa: E402
from ml.schema import DatasetSchema  # noqa: E402

NUMERIC = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
CATEGORICAL = ["island", "sex"]
TARGET = "species"
PIECE_ROWS = 250_000
MISSING_SHARE = 0.01
TARGET_ROWS_PER_SECOND = 200_000
TARGET_RSS_MIB = 500

cli = typer.Typer(add_completion=False)


def penguins() -> pd.DataFrame:
    frame = palmerpenguins.load_penguins().drop(columns=["year"])
    for column in CATEGORICAL:
        frame[column] = frame[column].astype(object).where(frame[column].notna(), MISSING_CATEGORY)
    return frame.dropna(subset=[TARGET])


def features(frame: pd.DataFrame) -> list[FeatureSpec]:
    specs = [
        FeatureSpec(
            name=name,
            dtype="category",
            categories=sorted(str(v) for v in frame[name].unique() if v != MISSING_CATEGORY),
            nullable=True,
        )
        for name in CATEGORICAL
    ]
    return specs + [FeatureSpec(name=name, dtype="float", nullable=True) for name in NUMERIC]


def publish(registry: ModelRegistry, frame: pd.DataFrame, kinds: list[str]) -> dict[str, str]:
    """The baseline (logreg) and the gradient-boosting experiment (hgb), as the pipeline
    trains them."""
    specs = features(frame)
    names = [f.name for f in specs]
    schema = DatasetSchema(target=TARGET, classes=sorted(frame[TARGET].unique()), features=specs)
    params = load_params(ROOT / "params.yaml").model
    tags = {}
    for kind in kinds:
        model = build_pipeline(schema, params.model_copy(update={"type": kind}))
        with single_threaded():
            model.fit(frame[names], frame[TARGET])
        reference = frame[names].head(5).replace({np.nan: None, MISSING_CATEGORY: None})
        meta = publish_experiment(
            registry,
            tag=f"bench-{kind}",
            model=model,
            features=specs,
            training_frame=frame[names],
            reference_instances=[
                {str(k): v for k, v in row.items()} for row in reference.to_dict(orient="records")
            ],
            model_type=kind,
            params={"type": kind},
            metrics={},
            git_commit=None,
            check_frame=frame[names],
            exist_ok=True,
            activate_if_none=True,
        )
        tags[kind] = meta.tag
    return tags


def generate(frame: pd.DataFrame, rows: int, folder: Path) -> dict[str, Path]:
    """``rows`` penguin-like rows as Parquet and CSV, written piece by piece."""
    rng = np.random.default_rng(0)
    paths = {"parquet": folder / "rows.parquet", "csv": folder / "rows.csv"}
    scale = frame[NUMERIC].std()
    writer: pq.ParquetWriter | None = None
    with paths["csv"].open("wb") as csv_file:
        for start in range(0, rows, PIECE_ROWS):
            n = min(PIECE_ROWS, rows - start)
            piece = frame.iloc[rng.integers(0, len(frame), n)].reset_index(drop=True)
            piece = piece[[*CATEGORICAL, *NUMERIC]].copy()
            for name in NUMERIC:
                piece[name] = (piece[name] + rng.normal(0, 0.1 * scale[name], n)).round(1)
            for name in [*CATEGORICAL, *NUMERIC]:
                blank = rng.random(n) < MISSING_SHARE
                piece.loc[blank, name] = MISSING_CATEGORY if name in CATEGORICAL else np.nan
            for name in CATEGORICAL:
                piece[name] = piece[name].replace({MISSING_CATEGORY: None})
            piece.insert(0, "id", np.arange(start, start + n))
            table = pa.Table.from_pandas(piece, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(paths["parquet"], table.schema)
            writer.write_table(table)
            options = pa_csv.WriteOptions(include_header=start == 0)
            pa_csv.write_csv(table, csv_file, options)
    assert writer is not None
    writer.close()
    return paths


@dataclass
class Result:
    model: str
    runtime: str
    fmt: str
    rows: int
    rows_per_second: float
    rows_per_cpu_second: float
    wall_seconds: float
    peak_rss_mib: float


def run_one(
    tag: str, source: Path, registry: Path, folder: Path, core: str, chunk_rows: int
) -> tuple[dict[str, Any], float, float]:
    target = folder / f"scores-{tag}-{source.suffix.lstrip('.')}.parquet"
    command = [
        "taskset", "-c", core,
        str(Path(sys.executable).parent / "ml-api"), "score", str(source), str(target),
        "--tag", tag, "--keep", "id", "--chunk-rows", str(chunk_rows), "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "ML_API_REGISTRY_URL": str(registry)}
    log = folder / f"{target.name}.log"
    started = time.perf_counter()
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=sink)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if process.returncode != 0:
        sys.stderr.write(log.read_text()[-3000:])
        raise SystemExit(f"ml-api score failed ({process.returncode}): {' '.join(command)}")
    summary = json.loads(Path(str(target) + ".summary.json").read_text())
    target.unlink()
    return summary, wall, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


@cli.command()
def main(
    rows: Annotated[int, typer.Option(help="Rows in the generated file.")] = 1_000_000,
    formats: Annotated[str, typer.Option(help="Input formats, comma-separated.")] = "parquet,csv",
    models: Annotated[str, typer.Option(help="Experiments, comma-separated.")] = "logreg,hgb",
    core: Annotated[str, typer.Option(help="CPU the scoring process is pinned to.")] = "0",
    chunk_rows: Annotated[int, typer.Option(help="--chunk-rows of the runs.")] = 50_000,
    workdir: Annotated[
        Path | None, typer.Option(help="Keep data and registry here [a temporary folder].")
    ] = None,
) -> None:
    if shutil.which("taskset") is None:
        raise SystemExit("taskset is needed to pin the scoring process to one core")
    folder = workdir or Path(tempfile.mkdtemp(prefix="bench-batch-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        frame = penguins()
        registry = folder / "registry"
        kinds = models.split(",")
        tags = publish(ModelRegistry(str(registry)), frame, kinds)
        marker = folder / f"rows-{rows}.done"
        paths = {"parquet": folder / "rows.parquet", "csv": folder / "rows.csv"}
        if not marker.exists():
            print(f"generating {rows:,} rows in {folder} ...", flush=True)
            paths = generate(frame, rows, folder)
            marker.touch()
        results = []
        for kind in kinds:
            for fmt in formats.split(","):
                summary, wall, rss = run_one(
                    tags[kind], paths[fmt], registry, folder, core, chunk_rows
                )
                results.append(
                    Result(
                        model=kind,
                        runtime=summary["runtime"],
                        fmt=fmt,
                        rows=summary["rows"],
                        rows_per_second=summary["rows_per_second"],
                        rows_per_cpu_second=summary["rows"] / summary["cpu_seconds"],
                        wall_seconds=wall,
                        peak_rss_mib=rss,
                    )
                )
        print_table(results)
    finally:
        if workdir is None:
            shutil.rmtree(folder, ignore_errors=True)


def print_table(results: list[Result]) -> None:
    print(
        "| model | runtime | input | rows | rows/s (one core) | rows per CPU-second "
        "| wall s (with start-up) | peak RSS MiB | targets met |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    shared = False
    for r in results:
        met = r.peak_rss_mib < TARGET_RSS_MIB and (
            r.model != "logreg" or r.rows_per_second >= TARGET_ROWS_PER_SECOND
        )
        shared |= r.rows_per_cpu_second > 1.2 * r.rows_per_second
        print(
            f"| {r.model} | {r.runtime} | {r.fmt} | {r.rows:,} | {r.rows_per_second:,.0f} "
            f"| {r.rows_per_cpu_second:,.0f} | {r.wall_seconds:.1f} | {r.peak_rss_mib:.0f} "
            f"| {'yes' if met else 'no'} |"
        )
    if shared:
        print(
            "\nThe core was shared (rows per CPU-second well above rows/s): other processes "
            "ran on it, and rows/s understates what one core does alone."
        )


if __name__ == "__main__":
    cli()
