"""One batch run, start to end: pick the model, check the input, score the chunks this run
owns (skipping those an interrupted run finished), assemble the output, write the summary."""

from __future__ import annotations

import logging
import resource
import time
from collections import deque
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

import orjson

from app.batch.engine import TaskSetup, WorkerFailed, open_engine
from app.batch.options import ScoreOptions
from app.batch.parts import PartStore, run_key
from app.batch.progress import make_report
from app.batch.reading import InputReader, JsonLinesReader, open_reader
from app.batch.scoring import OutputLayout, keep_types
from app.batch.storage import Location, write_bytes
from app.batch.summary import ChunkStats, Totals
from app.batch.validation import ChunkValidator
from app.errors import BatchInputError, ModelRejected, NoActiveModel, RowsRejected
from app.registry.meta import ExperimentMeta
from app.registry.store import ModelRegistry
from app.serving.inputs import InputSchema
from app.serving.model import has_verified_onnx, runtime_for
from app.settings import Settings

logger = logging.getLogger("app.batch")

SUMMARY_SUFFIX = ".summary.json"


def primary_tag(registry: ModelRegistry) -> str:
    """The tag the deployment serves as primary."""
    record = registry.read_deployment()
    if record is None:
        raise NoActiveModel("the registry has no deployment yet: name the model with --tag")
    return record.spec.primary


def score_file(options: ScoreOptions, settings: Settings) -> dict[str, Any]:
    """Run ``options`` to the end; returns the summary (also written beside the output)."""
    started, started_at, cpu_started = time.perf_counter(), datetime.now(UTC), _cpu_seconds()
    registry = ModelRegistry(settings.registry_url, settings.registry_storage_options)
    tag = options.tag or primary_tag(registry)
    meta = registry.read_meta(tag)
    runtime = runtime_for(meta, settings.runtime)
    if settings.runtime == "onnx" and not has_verified_onnx(meta):
        # Said here, before workers start (each would load the model only to refuse it).
        raise ModelRejected(f"experiment {tag!r} has no usable ONNX copy (ML_API_RUNTIME=onnx)")
    in_format, out_format = options.resolved_input_format, options.resolved_output_format

    def place(url: str) -> Location:
        return Location(url, settings.registry_url, settings.registry_storage_options)

    source, target = place(options.input_url), place(options.output_url)
    layout = OutputLayout(options.keep, tuple(meta.classes), with_row=options.shard is not None)
    layout.check()
    schema = InputSchema.unlimited(meta.features)
    reader = open_reader(source, in_format, options.chunk_rows)
    try:
        ChunkValidator(schema).check_columns(reader.columns, reader.types, source.url)
        absent = [name for name in options.keep if name not in reader.columns]
        if absent:
            raise BatchInputError(
                f"--keep {', '.join(map(repr, absent))}: no such column in {source.url!r} "
                f"(it has {', '.join(reader.columns)})"
            )
        description = {
            "input": {"url": source.url, "format": in_format, "fingerprint": source.fingerprint()},
            "output_format": out_format,
            "tag": tag,
            "model_sha256": meta.model_sha256,
            "runtime": runtime,
            "onnx_sha256": meta.onnx.sha256 if runtime == "onnx" and meta.onnx else None,
            "chunk_rows": options.chunk_rows,
            "keep": list(options.keep),
            "shard": str(options.shard) if options.shard else None,
            "max_string_length": settings.max_string_length,
        }
        parts = PartStore(target, out_format)
        done = parts.resume(run_key(description), description)
        setup = TaskSetup(
            registry_url=settings.registry_url,
            registry_options=dict(settings.registry_storage_options),
            tag=tag,
            model_sha256=meta.model_sha256,
            runtime=settings.runtime,
            max_string_length=settings.max_string_length,
            layout=layout,
            output_url=options.output_url,
            output_format=out_format,
            fail_fast=options.fail_fast,
        )
        resumed = len(done)
        needed = list(dict.fromkeys([*schema.names, *options.keep]))
        owned, input_rows, scored_now = _score_chunks(
            options, reader, needed, setup, done, runtime, settings.model_threads
        )
        empty = layout.empty_table(keep_types(layout, reader.types, reader.kind))
        parts.assemble(owned, empty)
        ignored = _ignored(reader, meta, options)
    finally:
        reader.close()
    duration = time.perf_counter() - started
    totals = Totals.of(done[i] for i in owned)
    summary = {
        "status": "complete",
        "input": source.url,
        "output": target.url,
        "input_format": in_format,
        "output_format": out_format,
        "tag": tag,
        "model_sha256": meta.model_sha256,
        "runtime": runtime,
        "onnx_sha256": description["onnx_sha256"],
        "rows": totals.rows,
        "rows_scored": totals.rows - totals.failed,
        "rows_failed": totals.failed,
        "failures": totals.failures(),
        "unknown_categories": totals.unknown_categories,
        "ignored_columns": ignored,
        "kept_columns": list(options.keep),
        "input_rows": input_rows,
        "chunks": totals.chunks,
        "chunk_rows": options.chunk_rows,
        "resumed_chunks": resumed,
        "workers": options.workers,
        "shard": description["shard"],
        "started_at": started_at.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "duration_seconds": round(duration, 3),
        "rows_per_second": round(scored_now / duration, 1) if duration > 0 else None,
        # CPU time of this process and its finished workers: with duration it tells whether
        # the run had its cores to itself.
        "cpu_seconds": round(_cpu_seconds() - cpu_started, 3),
    }
    summary_place = target.sibling(SUMMARY_SUFFIX)
    write_bytes(
        summary_place.fs, summary_place.path, orjson.dumps(summary, option=orjson.OPT_INDENT_2)
    )
    parts.remove()
    logger.info(
        "%s: %s rows, %s failed, %.1f s; output %s, summary %s",
        tag,
        f"{totals.rows:,}",
        f"{totals.failed:,}",
        duration,
        target.url,
        summary_place.url,
    )
    return summary


def _score_chunks(
    options: ScoreOptions,
    reader: InputReader,
    needed: list[str],
    setup: TaskSetup,
    done: dict[int, ChunkStats],
    runtime: str,
    model_threads: int,
) -> tuple[list[int], int, int]:
    """Score every chunk this run owns and has not done yet (``needed`` columns read);
    ``done`` gains their figures. Returns the owned chunks in order, the input's row count
    and the rows scored by this run."""
    shard = options.shard

    def owns(index: int) -> bool:
        return shard is None or shard.owns(index)

    owned: list[int] = []
    input_rows = 0
    rows_now, failed_now = 0, 0
    report = make_report(options.progress, f"scoring with {setup.tag}")
    try:
        with open_engine(setup, options.workers, model_threads) as engine:
            in_flight: deque[Future[ChunkStats]] = deque()

            def settle(future: Future[ChunkStats]) -> None:
                nonlocal rows_now, failed_now
                try:
                    stats = future.result()
                except WorkerFailed as exc:
                    raise BatchInputError(str(exc)) from None
                if stats.runtime != runtime:
                    raise BatchInputError(f"a worker scored with {stats.runtime}, not {runtime}")
                if not stats.written:
                    raise RowsRejected(_fail_fast_message(stats, done))
                done[stats.index] = stats
                rows_now += stats.rows
                failed_now += stats.failed
                report.update(rows_now, failed_now, reader.fraction_read())

            chunks = reader.chunks(needed, lambda i: owns(i) and i not in done)
            for chunk in chunks:
                input_rows += chunk.n_rows
                if not owns(chunk.index):
                    continue
                owned.append(chunk.index)
                if chunk.index in done:
                    continue
                in_flight.append(engine.submit(chunk))
                while len(in_flight) >= engine.capacity:
                    settle(in_flight.popleft())
            while in_flight:
                settle(in_flight.popleft())
    finally:
        report.close()
    return owned, input_rows, rows_now


def _cpu_seconds() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def _fail_fast_message(stats: ChunkStats, done: dict[int, ChunkStats]) -> str:
    first = stats.examples[0]
    kept = sum(s.rows for s in done.values())
    return (
        f"{first['message']} (--fail-fast: stopped at the first invalid row; the {kept:,} "
        "rows already scored are kept, and a rerun with the same arguments resumes from there)"
    )


def _ignored(reader: InputReader, meta: ExperimentMeta, options: ScoreOptions) -> list[str]:
    used = {f.name for f in meta.features} | set(options.keep)
    columns = list(reader.columns)
    if isinstance(reader, JsonLinesReader):
        columns += sorted(reader.keys_seen - set(columns))
    return [name for name in columns if name not in used]
