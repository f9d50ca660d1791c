"""The models a worker holds, keyed by experiment tag: each loaded once, whatever its roles.

Loading and verifying run off the event loop, one model at a time (a worker never spends
more than one model's worth of memory and CPU on loading at once). A model leaves the pool
when the deployment no longer names it; requests that still hold it finish with it, and it
is freed when the last one drops it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

import anyio.to_thread

from app.metrics import ServiceMetrics
from app.registry.store import ModelRegistry
from app.serving.inputs import InputLimits
from app.serving.model import LoadedModel, load_verified
from app.serving.runtime import release_memory, run_with_thread_limit

logger = logging.getLogger(__name__)

ModelLoader = Callable[[ModelRegistry, str, InputLimits], LoadedModel]

RELEASE_AFTER_SECONDS = 1.0


class ModelPool:
    def __init__(
        self,
        registry: ModelRegistry,
        metrics: ServiceMetrics,
        limits: InputLimits,
        loader: ModelLoader = load_verified,
    ) -> None:
        self._registry = registry
        self._metrics = metrics
        self._limits = limits
        self._loader = loader
        self._models: dict[str, LoadedModel] = {}
        self._load_lock = asyncio.Lock()

    @property
    def tags(self) -> list[str]:
        return sorted(self._models)

    def get(self, tag: str) -> LoadedModel | None:
        return self._models.get(tag)

    async def load_all(self, tags: Iterable[str]) -> dict[str, LoadedModel]:
        """Every tag of ``tags``, loading (and verifying) those not held yet, in order.

        Raises the first load failure; models loaded before it stay in the pool until the
        next :meth:`retain` (the caller retains what serves, which drops them).
        """
        wanted = list(dict.fromkeys(tags))
        async with self._load_lock:
            for tag in wanted:
                if tag not in self._models:
                    model = await anyio.to_thread.run_sync(
                        run_with_thread_limit, self._loader, self._registry, tag, self._limits
                    )
                    self._metrics.model_loaded(model.load_seconds)
                    logger.info("loaded %s in %.0f ms", tag, model.load_seconds * 1000)
                    self._models[tag] = model
        return {tag: self._models[tag] for tag in wanted}

    def retain(self, tags: Iterable[str]) -> None:
        """Drop every model not in ``tags`` (in-flight requests keep theirs until they end).

        A second later, when those requests are done, the memory goes back to the system:
        without that a worker's RSS stays at its highest however many models left.
        """
        keep = set(tags)
        dropped = [t for t in self._models if t not in keep]
        for tag in dropped:
            del self._models[tag]
            logger.info("unloaded %s", tag)
        if dropped:
            try:
                asyncio.get_running_loop().call_later(RELEASE_AFTER_SECONDS, release_memory)
            except RuntimeError:  # no event loop (a script): release now
                release_memory()

    def clear(self) -> None:
        self._models.clear()
