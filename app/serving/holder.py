"""The model holder: which model serves, and how it is replaced without a failed request.

A request takes a reference to the active ``LoadedModel`` once and uses it to the end, so it
is served wholly by one model. A swap loads and verifies the new model off the event loop
while the old one keeps serving, persists the pointer, then replaces the reference in one
assignment; the old model is freed when its last in-flight request drops it.

Nothing here assumes a single model beyond ``_active``: a ``LoadedModel`` is self-contained
(schema, runtime, its own micro-batching queue and metric labels), so shadow and canary
routing can hold several side by side.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio.to_thread

from app.errors import BrokenExperiment, NoActiveModel, RegistryUnavailable, ServiceError
from app.metrics import ServiceMetrics
from app.registry.meta import validate_tag
from app.registry.store import ModelRegistry
from app.serving.inputs import InputLimits
from app.serving.model import LoadedModel, load_verified

logger = logging.getLogger(__name__)

ModelLoader = Callable[[ModelRegistry, str, InputLimits], LoadedModel]


@dataclass(frozen=True)
class SwapOutcome:
    previous_tag: str | None
    active_tag: str
    load_ms: float


class ModelHolder:
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
        self._active: LoadedModel | None = None
        self._active_since: datetime | None = None
        self._swap_lock = asyncio.Lock()

    # -- reading -----------------------------------------------------------------------
    def active(self) -> LoadedModel:
        """The model serving now; callers keep this reference for the whole request."""
        model = self._active
        if model is None:
            raise NoActiveModel(
                "no model is active yet: publish an experiment and activate it with "
                "POST /replace_ml_model"
            )
        return model

    @property
    def active_tag(self) -> str | None:
        model = self._active
        return None if model is None else model.tag

    @property
    def active_since(self) -> datetime | None:
        """When this worker started serving the active model (how fast a swap reached it)."""
        return self._active_since

    @property
    def ready(self) -> bool:
        return self._active is not None

    # -- swapping ----------------------------------------------------------------------
    async def replace(self, tag: str, *, requested_by: str) -> SwapOutcome:
        """Make ``tag`` the active model here and in the registry pointer (for every worker).

        Serialised: concurrent calls run one after another. On any failure nothing changes.
        """
        validate_tag(tag)
        async with self._swap_lock:
            previous = self.active_tag
            try:
                model = await self._load(tag)
                await anyio.to_thread.run_sync(
                    lambda: self._registry.write_active(
                        tag, updated_by=requested_by, previous_tag=previous
                    )
                )
            except Exception:  # a bug in loading is a failed swap too, for the swap alerts
                self._metrics.swap_finished(succeeded=False)
                raise
            self._install(model)
            self._metrics.swap_finished(succeeded=True)
            outcome = SwapOutcome(previous, tag, model.load_seconds * 1000)
            logger.info(
                "swapped model %s -> %s (%.0f ms) by %s",
                previous,
                tag,
                outcome.load_ms,
                requested_by,
            )
            return outcome

    async def sync_with_registry(self) -> bool:
        """Follow the registry pointer (another worker or replica may have moved it).

        Returns True when the active model matches the pointer afterwards. Never raises: on
        storage trouble or a model that fails to load, the current model keeps serving and
        the problem is logged.
        """
        try:
            pointer = await anyio.to_thread.run_sync(self._registry.read_active)
        except RegistryUnavailable as exc:
            logger.warning("cannot read the active pointer, keeping %s: %s", self.active_tag, exc)
            return False
        except BrokenExperiment as exc:
            logger.error("active pointer unreadable, keeping %s: %s", self.active_tag, exc)
            return False
        if pointer is None or pointer.tag == self.active_tag:
            return True
        async with self._swap_lock:
            if pointer.tag == self.active_tag:
                return True
            try:
                model = await self._load(pointer.tag)
            except Exception as exc:  # whatever failed, the current model keeps serving
                logger.error(
                    "cannot load %s named by the pointer, keeping %s: %s",
                    pointer.tag,
                    self.active_tag,
                    exc,
                    exc_info=not isinstance(exc, ServiceError),  # a bug: keep its traceback
                )
                return False
            self._install(model)
            logger.info("following the registry pointer: now serving %s", model.tag)
            return True

    async def _load(self, tag: str) -> LoadedModel:
        return await anyio.to_thread.run_sync(self._loader, self._registry, tag, self._limits)

    def _install(self, model: LoadedModel) -> None:
        # One reference assignment: requests that already hold the old model finish with it.
        self._active = model
        self._active_since = datetime.now(UTC)
        self._metrics.model_activated(model.tag, model.meta.model_type, model.load_seconds)

    def release_all(self) -> None:
        self._active = None
        self._active_since = None
