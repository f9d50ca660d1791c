"""Background loops of a worker: follow the registry pointer, measure input drift."""

from __future__ import annotations

import asyncio
import logging

import anyio.to_thread

from app.metrics import ServiceMetrics
from app.serving.drift import DriftMonitor
from app.serving.holder import ModelHolder

logger = logging.getLogger(__name__)

FIRST_RETRY_SECONDS = 0.5


async def follow_registry(
    holder: ModelHolder, poll_seconds: float, max_backoff: float, in_sync: bool = True
) -> None:
    """Re-read the active pointer every ``poll_seconds``, so a swap made through any worker or
    replica reaches this one. While no model could be loaded yet, retry with back-off.

    The caller has just synchronised (``in_sync`` says how that went), so the loop waits
    first. ``sync_with_registry`` never raises, so the loop cannot die and leave the worker
    deaf to later swaps.
    """
    delay = FIRST_RETRY_SECONDS
    while True:
        if in_sync or holder.ready:
            delay = FIRST_RETRY_SECONDS
            await asyncio.sleep(poll_seconds)
        else:
            logger.warning("no model loaded yet; retrying in %.1f s", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_backoff)
        in_sync = await holder.sync_with_registry()


async def measure_drift(
    holder: ModelHolder, drift: DriftMonitor, metrics: ServiceMetrics, interval: float
) -> None:
    while True:
        await asyncio.sleep(interval)
        if not holder.ready:
            continue
        model = holder.active()
        profiles = model.meta.training_profile
        if not profiles:
            continue
        try:
            values = await anyio.to_thread.run_sync(drift.compute, profiles, model.tag)
        except Exception:
            logger.exception("drift computation failed")
            continue
        metrics.drift_measured(model.tag, values)
