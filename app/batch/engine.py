"""Where chunks are scored: in this process, or in worker processes that each load the model
once (``--workers N``), with one native thread each.

Either way a chunk is one task (validate, score, write its part and record) and the results
come back in chunk order, so a ``--fail-fast`` stop names the first bad row of the input, not
whichever worker finished first. At most ``capacity`` chunks are in flight, which bounds
memory. Workers are started with ``spawn``: a fork would copy the reader's threads and open
connections.
"""

from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import pyarrow as pa

from app.batch.options import Format
from app.batch.parts import PartStore
from app.batch.reading import Chunk
from app.batch.scoring import ChunkScorer, OutputLayout
from app.batch.storage import Location
from app.batch.summary import ChunkStats
from app.errors import ModelRejected, ServiceError
from app.registry.store import ModelRegistry
from app.serving.inputs import InputLimits
from app.serving.model import RuntimeChoice, load_verified
from app.serving.runtime import limit_native_threads


@dataclass(frozen=True)
class TaskSetup:
    """Everything a process needs to score chunks and write their parts (picklable)."""

    registry_url: str
    registry_options: dict[str, Any]
    tag: str
    model_sha256: str
    runtime: RuntimeChoice
    max_string_length: int
    layout: OutputLayout
    output_url: str
    output_format: Format
    fail_fast: bool


class ChunkTask:
    """Scores one chunk and stores its part; under ``--fail-fast`` a chunk with a bad row is
    not stored (its figures come back with ``written=False``)."""

    def __init__(self, setup: TaskSetup) -> None:
        registry = ModelRegistry(setup.registry_url, setup.registry_options)
        limits = InputLimits(max_rows=sys.maxsize, max_string_length=setup.max_string_length)
        model = load_verified(registry, setup.tag, limits, setup.runtime)
        if model.meta.model_sha256 != setup.model_sha256:
            raise ModelRejected(f"experiment {setup.tag!r} changed while the run started")
        self.scorer = ChunkScorer(model, setup.layout)
        location = Location(setup.output_url, setup.registry_url, setup.registry_options)
        self.parts = PartStore(location, setup.output_format)
        self.fail_fast = setup.fail_fast

    def __call__(self, chunk: Chunk) -> ChunkStats:
        table, stats = self.scorer.score(chunk)
        if self.fail_fast and stats.failed:
            stats.written = False
            return stats
        self.parts.write(table, stats)
        return stats


class _Engine:
    """Closed on leaving a ``with`` block; queued chunks are cancelled when it left on an
    error."""

    def close(self, cancel: bool = False) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close(cancel=exc is not None)


class InlineEngine(_Engine):
    """Scores in this process (``--workers 1``)."""

    capacity = 1

    def __init__(self, setup: TaskSetup, model_threads: int) -> None:
        self._restore = limit_native_threads(model_threads)
        try:
            self._task = ChunkTask(setup)
        except BaseException:
            self._restore()
            raise

    def submit(self, chunk: Chunk) -> Future[ChunkStats]:
        future: Future[ChunkStats] = Future()
        try:
            future.set_result(self._task(chunk))
        except BaseException as exc:
            future.set_exception(exc)
        return future

    def close(self, cancel: bool = False) -> None:
        self._restore()


class WorkerFailed(Exception):
    """A worker's error, carried back to the main process as plain text."""


# The task of this worker process (set by _start_worker), or why it could not be built.
_task: ChunkTask | None = None
_start_error: str | None = None


def _start_worker(setup: TaskSetup) -> None:
    global _task, _start_error
    limit_native_threads(1)
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    try:
        _task = ChunkTask(setup)
    except ServiceError as exc:
        _start_error = exc.message


def _score_in_worker(chunk: Chunk) -> ChunkStats:
    if _task is None:
        raise WorkerFailed(_start_error or "the worker could not start")
    try:
        return _task(chunk)
    except ServiceError as exc:
        raise WorkerFailed(exc.message) from None


class PoolEngine(_Engine):
    """Scores in ``workers`` processes, each with its own copy of the model."""

    def __init__(self, setup: TaskSetup, workers: int) -> None:
        self.capacity = 2 * workers
        self._pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(setup,),
        )

    def submit(self, chunk: Chunk) -> Future[ChunkStats]:
        return self._pool.submit(_score_in_worker, chunk)

    def close(self, cancel: bool = False) -> None:
        self._pool.shutdown(wait=True, cancel_futures=cancel)


Engine = InlineEngine | PoolEngine


def open_engine(setup: TaskSetup, workers: int, model_threads: int) -> Engine:
    if workers == 1:
        return InlineEngine(setup, model_threads)
    return PoolEngine(setup, workers)
