"""A worker's life: thread caps, the first sync with the registry, the background loops.

Shared by every way the service runs a model: the HTTP workers (uvicorn's lifespan), the
stream consumer and batch scoring, so all of them follow hot swaps and the deployment spec
the same way.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import resource
from collections.abc import Callable, Coroutine
from typing import Any

from app.feedback.bandit import BanditLoop
from app.feedback.recorder import PredictionRecorder
from app.feedback.report import ReportExporter
from app.metrics import ServiceMetrics, process_exited
from app.serving.deployment import Deployment
from app.serving.drift import DriftMonitor
from app.serving.guard import CanaryGuard
from app.serving.runtime import limit_native_threads
from app.serving.shadow import ShadowMirror

logger = logging.getLogger(__name__)

FIRST_RETRY_SECONDS = 0.5
RESOURCES_SECONDS = 5.0
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def process_resources() -> tuple[float, float]:
    """(CPU seconds, resident bytes) of this process, from the kernel's own counters."""
    times = os.times()
    try:
        with open("/proc/self/statm") as statm:
            resident = int(statm.read().split()[1]) * _PAGE_SIZE
    except OSError:  # not Linux: the peak is the best figure at hand
        resident = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return times.user + times.system, float(resident)


def _nothing() -> None:
    return None


class WorkerLifecycle:
    def __init__(
        self,
        deployment: Deployment,
        drift: DriftMonitor,
        metrics: ServiceMetrics,
        mirror: ShadowMirror,
        guard: CanaryGuard,
        recorder: PredictionRecorder,
        bandit: BanditLoop,
        report_exporter: ReportExporter,
        *,
        model_threads: int,
        poll_seconds: float,
        startup_retry_max_seconds: float,
        drift_interval_seconds: float,
        metrics_flush_seconds: float,
    ) -> None:
        self.deployment = deployment
        self._drift = drift
        self._metrics = metrics
        self._mirror = mirror
        self._guard = guard
        self._recorder = recorder
        self._bandit = bandit
        self._report_exporter = report_exporter
        self._model_threads = model_threads
        self._poll_seconds = poll_seconds
        self._max_backoff = startup_retry_max_seconds
        self._drift_interval = drift_interval_seconds
        self._metrics_flush = metrics_flush_seconds
        self._tasks: list[asyncio.Task[None]] = []
        self._restore_threads: Callable[[], None] = _nothing

    async def start(self, *extra: Coroutine[Any, Any, None]) -> None:
        """Cap native threads, load what the registry says serves, start the loops (and
        ``extra`` loops of the caller, e.g. a bandit or a stream consumer)."""
        self._restore_threads = limit_native_threads(self._model_threads)
        in_sync = await self.deployment.sync_with_registry()
        # Everything loaded so far (libraries, the first models) lives as long as the
        # process: keeping it out of the cyclic collector's scans removes multi-millisecond
        # pauses from the tail latency.
        gc.freeze()
        loops: list[tuple[str, Coroutine[Any, Any, None]]] = [
            ("follow-registry", self.follow_registry(in_sync)),
            ("measure-drift", self.measure_drift()),
            ("shadow-mirror", self._mirror.run()),
            ("canary-guard", self._guard.run()),
            ("record-predictions", self._recorder.run()),
            ("bandit", self._bandit.run()),
            ("export-ab-figures", self._report_exporter.run()),
            ("report-resources", self.report_resources()),
            ("flush-metrics", self.flush_metrics()),
            *((f"extra-{i}", loop) for i, loop in enumerate(extra)),
        ]
        self._tasks = [asyncio.create_task(loop, name=name) for name, loop in loops]

    async def stop(self) -> None:
        await self._recorder.flush()  # what was served still reaches the store
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._metrics.flush()  # what this worker counted outlives it in the shared files
        self.deployment.release_all()
        self._restore_threads()
        process_exited(os.getpid())

    async def follow_registry(self, in_sync: bool = True) -> None:
        """Re-read the spec every ``poll_seconds``, so a change made through any worker or
        replica reaches this one. While nothing could be loaded yet, retry with back-off.

        The caller has just synchronised (``in_sync`` says how that went), so the loop waits
        first. ``sync_with_registry`` never raises, so the loop cannot die and leave the
        worker deaf to later changes.
        """
        delay = FIRST_RETRY_SECONDS
        while True:
            if in_sync or self.deployment.ready:
                delay = FIRST_RETRY_SECONDS
                await asyncio.sleep(self._poll_seconds)
            else:
                logger.warning("no model loaded yet; retrying in %.1f s", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)
            in_sync = await self.deployment.sync_with_registry()

    async def report_resources(self, interval: float = RESOURCES_SECONDS) -> None:
        """This worker's CPU time and resident memory, as gauges per process: in multiprocess
        mode prometheus-client exports no process metrics by itself."""
        while True:
            self._metrics.worker_resources(*process_resources())
            await asyncio.sleep(interval)

    async def flush_metrics(self) -> None:
        """Write the request metrics this worker holds back, so that a scrape answered by
        another worker sees them (a scrape answered by this one flushes first)."""
        while True:
            await asyncio.sleep(self._metrics_flush)
            self._metrics.flush()

    async def measure_drift(self) -> None:
        """Every interval, PSI of each serving model's recent inputs against its training."""
        while True:
            await asyncio.sleep(self._drift_interval)
            plan = self.deployment.current()
            if plan is None:
                continue
            self._drift.retain(plan.models)
            for tag, model in plan.models.items():
                profiles = model.meta.training_profile
                if not profiles:
                    continue
                try:
                    values = await self._drift.measure(profiles, tag)
                except Exception:
                    logger.exception("drift computation failed for %s", tag)
                    continue
                self._metrics.drift_measured(tag, values)
