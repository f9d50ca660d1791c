"""The deployment: which models serve in which roles, changed without a failed request.

A change (``PUT /deployment``, a hot swap, promote, rollback, the canary guard) is validated
against the registry's current spec, every model it names is loaded and verified off the
event loop while the current ones keep serving, the new spec is written to the registry, and
only then is the in-memory plan replaced in one assignment. A request takes the plan once and
is served wholly by it. Any failure leaves the old plan serving and the registry unchanged.

Every worker and replica follows the registry's spec (:meth:`Deployment.sync_with_registry`),
so a change made through any of them reaches all; a restart comes back with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import anyio.to_thread

from app.errors import (
    BrokenExperiment,
    IncompatibleSpec,
    ModelNotLoaded,
    NoActiveModel,
    NothingToRollBack,
    PrimaryNotRemovable,
    RegistryUnavailable,
    ServiceError,
    UnknownCandidate,
)
from app.metrics import ServiceMetrics
from app.registry.spec import DeploymentRecord, SpecAction, SpecBody
from app.registry.store import ModelRegistry
from app.serving.model import LoadedModel
from app.serving.pool import ModelPool
from app.serving.routing import Router

logger = logging.getLogger(__name__)

# A change expressed on the registry's current spec (None when there is none yet).
SpecEdit = Callable[[SpecBody | None], SpecBody]


@dataclass(frozen=True)
class ServingPlan:
    """One consistent view of what serves: the spec, its loaded models and its router."""

    record: DeploymentRecord
    models: Mapping[str, LoadedModel]
    router: Router
    since: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def spec(self) -> SpecBody:
        return self.record.spec

    @property
    def primary(self) -> LoadedModel:
        return self.models[self.record.spec.primary]

    def role(self, tag: str) -> str:
        return self.record.spec.role_of(tag) or "none"


@dataclass(frozen=True)
class ChangeOutcome:
    previous: SpecBody | None
    record: DeploymentRecord
    load_ms: float


def check_compatible(spec: SpecBody, models: Mapping[str, LoadedModel]) -> None:
    """Every arm and shadow takes the primary's features (names, types, order): one decoded
    request then suits all of them, and a split never turns a valid request into an error."""
    primary = models[spec.primary]
    expected = [(f.name, f.dtype) for f in primary.meta.features]
    for tag in spec.tags[1:]:
        got = [(f.name, f.dtype) for f in models[tag].meta.features]
        if got != expected:
            raise IncompatibleSpec(
                f"experiment {tag!r} takes features {_describe(got)} but the primary "
                f"{spec.primary!r} takes {_describe(expected)}: every candidate and shadow must "
                "take the primary's features (same names, types and order)"
            )


def _describe(features: Sequence[tuple[str, str]]) -> str:
    return "[" + ", ".join(f"{name}:{dtype}" for name, dtype in features) + "]"


class Deployment:
    def __init__(self, registry: ModelRegistry, pool: ModelPool, metrics: ServiceMetrics) -> None:
        self._registry = registry
        self._pool = pool
        self._metrics = metrics
        self._plan: ServingPlan | None = None
        self._weights: tuple[int, dict[str, float]] | None = None
        self._lock = asyncio.Lock()

    # -- reading -----------------------------------------------------------------------
    def plan(self) -> ServingPlan:
        """What serves now; callers keep this reference for the whole request."""
        plan = self._plan
        if plan is None:
            raise NoActiveModel(
                "no model is active yet: publish an experiment and activate it with "
                "POST /replace_ml_model or PUT /deployment"
            )
        return plan

    def current(self) -> ServingPlan | None:
        return self._plan

    @property
    def ready(self) -> bool:
        return self._plan is not None

    # -- changing ----------------------------------------------------------------------
    async def change(
        self, spec: SpecBody, *, by: str, action: SpecAction = "put", reason: str = ""
    ) -> ChangeOutcome:
        """Make ``spec`` serve here and in the registry (for every worker and replica)."""
        async with self._lock:
            try:
                current = await self._read_for_change()
                outcome = await self._apply(current, spec, by=by, action=action, reason=reason)
            except Exception:  # a bug while loading is a failed change too, for the alerts
                self._metrics.deployment_changed(action, succeeded=False)
                raise
            self._metrics.deployment_changed(action, succeeded=True)
            return outcome

    async def replace_primary(self, tag: str, *, by: str) -> ChangeOutcome:
        """``tag`` becomes the primary with all traffic; candidates and shadows are cleared.
        Settings such as the guard's are kept."""

        def replaced(spec: SpecBody | None) -> SpecBody:
            if spec is None:
                return SpecBody(primary=tag)
            return SpecBody(primary=tag, guard=spec.guard)

        return await self._counted_as_swap(self._edit(replaced, by=by, action="replace"))

    async def promote(self, tag: str, *, by: str) -> ChangeOutcome:
        """A candidate becomes the primary with all traffic."""

        def promoted(spec: SpecBody | None) -> SpecBody:
            if spec is None or all(c.tag != tag for c in spec.candidates):
                names = [c.tag for c in spec.candidates] if spec else []
                raise UnknownCandidate(
                    f"{tag!r} is not a candidate of the deployment (candidates: "
                    f"{', '.join(names) or 'none'}); promote one of them, or use PUT /deployment"
                )
            return SpecBody(primary=tag, guard=spec.guard)

        return await self._counted_as_swap(self._edit(promoted, by=by, action="promote"))

    async def _counted_as_swap(self, change: Awaitable[ChangeOutcome]) -> ChangeOutcome:
        """A change of the primary is also a model swap (the swap alerts watch those)."""
        try:
            outcome = await change
        except Exception:
            self._metrics.swap_finished(succeeded=False)
            raise
        self._metrics.swap_finished(succeeded=True)
        record = outcome.record
        logger.info(
            "swapped model %s -> %s (%.0f ms) by %s",
            outcome.previous.primary if outcome.previous else None,
            record.spec.primary,
            outcome.load_ms,
            record.updated_by,
        )
        return outcome

    async def rollback(self, *, by: str) -> ChangeOutcome:
        """Back to the spec before the last change."""
        async with self._lock:
            try:
                current = await self._read_for_change()
                if current is None or current.previous is None:
                    raise NothingToRollBack("the deployment has no earlier spec to roll back to")
                outcome = await self._apply(
                    current, current.previous, by=by, action="rollback", reason="rollback"
                )
            except Exception:
                self._metrics.deployment_changed("rollback", succeeded=False)
                raise
            self._metrics.deployment_changed("rollback", succeeded=True)
            return outcome

    async def take_out(self, tag: str, *, reason: str, by: str = "canary-guard") -> bool:
        """Give a candidate's share back to the primary (the canary guard's action).

        Returns False when ``tag`` is no longer a candidate (another worker was first).
        """
        async with self._lock:
            current = await self._read_for_change()
            if current is None or all(c.tag != tag for c in current.spec.candidates):
                return False
            spec = current.spec
            remaining = [c for c in spec.candidates if c.tag != tag]
            reduced = spec.model_copy(update={"candidates": remaining})
            if reduced.bandit is not None and not remaining:
                reduced = reduced.model_copy(update={"bandit": None})
            try:
                await self._apply(current, reduced, by=by, action="guard", reason=reason)
            except Exception:
                self._metrics.deployment_changed("guard", succeeded=False)
                raise
            self._metrics.deployment_changed("guard", succeeded=True)
            return True

    async def remove(self, tag: str, *, by: str, reason: str) -> ChangeOutcome:
        """Take a candidate or shadow out of the spec (its share goes back to the primary);
        the primary cannot leave by itself, another tag must replace it."""
        async with self._lock:
            try:
                current = await self._read_for_change()
                spec = current.spec if current is not None else None
                role = spec.role_of(tag) if spec is not None else None
                if spec is None or role is None:
                    raise ModelNotLoaded(
                        f"experiment {tag!r} is not in the deployment: nothing to unload"
                    )
                if role == "primary":
                    raise PrimaryNotRemovable(
                        f"experiment {tag!r} is the primary: it leaves when another experiment "
                        "replaces it (load that one: it becomes the primary), or change the "
                        "deployment with PUT /deployment"
                    )
                candidates = [c for c in spec.candidates if c.tag != tag]
                reduced = spec.model_copy(
                    update={
                        "candidates": candidates,
                        "shadows": [s for s in spec.shadows if s.tag != tag],
                        "bandit": spec.bandit if candidates else None,
                    }
                )
                outcome = await self._apply(current, reduced, by=by, action="put", reason=reason)
            except Exception:
                self._metrics.deployment_changed("put", succeeded=False)
                raise
            self._metrics.deployment_changed("put", succeeded=True)
            return outcome

    def set_weights(self, revision: int, weights: Mapping[str, float]) -> bool:
        """Route with these candidate weights (a bandit's) while the spec stays at
        ``revision``; returns False when the spec has moved on."""
        plan = self._plan
        if plan is None or plan.record.revision != revision:
            return False
        if set(weights) != {c.tag for c in plan.spec.candidates}:
            return False
        self._weights = (revision, dict(weights))
        self._plan = ServingPlan(
            plan.record, plan.models, Router(plan.spec, weights), since=plan.since
        )
        self._publish_plan_metrics(self._plan)
        return True

    async def _edit(self, edit: SpecEdit, *, by: str, action: SpecAction) -> ChangeOutcome:
        async with self._lock:
            try:
                current = await self._read_for_change()
                spec = edit(current.spec if current is not None else None)
                outcome = await self._apply(current, spec, by=by, action=action)
            except Exception:
                self._metrics.deployment_changed(action, succeeded=False)
                raise
            self._metrics.deployment_changed(action, succeeded=True)
            return outcome

    async def _read_for_change(self) -> DeploymentRecord | None:
        """The registry's spec (another replica may have changed it since we last looked);
        a damaged file is replaced by the change, built on what this worker serves."""
        try:
            return await anyio.to_thread.run_sync(self._registry.read_deployment)
        except BrokenExperiment as exc:
            logger.error("%s; the change replaces it", exc.message)
            plan = self._plan
            return None if plan is None else plan.record

    async def _apply(
        self,
        current: DeploymentRecord | None,
        spec: SpecBody,
        *,
        by: str,
        action: SpecAction,
        reason: str = "",
    ) -> ChangeOutcome:
        previous_tags = set(self._pool.tags)
        try:
            models = await self._pool.load_all(spec.tags)
            check_compatible(spec, models)
            now = datetime.now(UTC)
            record = (
                current.successor(spec, at=now, by=by, action=action, reason=reason)
                if current is not None
                else DeploymentRecord.first(spec, at=now, by=by, action=action, reason=reason)
            )
            await anyio.to_thread.run_sync(self._registry.write_deployment, record)
        except BaseException:
            self._retain_serving()
            raise
        load_ms = sum(m.load_seconds for t, m in models.items() if t not in previous_tags) * 1000
        self._install(record, models)
        logger.info(
            "deployment %s by %s (revision %d): %s%s",
            action,
            by,
            record.revision,
            _summary(spec),
            f" ({reason})" if reason else "",
        )
        return ChangeOutcome(current.spec if current else None, record, load_ms)

    # -- following ---------------------------------------------------------------------
    async def sync_with_registry(self) -> bool:
        """Follow the registry's spec (another worker or replica may have changed it).

        Returns True when this worker serves the registry's spec afterwards. Never raises: on
        storage trouble, a damaged spec or a model that fails to load, the current plan keeps
        serving and the problem is logged.
        """
        try:
            record = await anyio.to_thread.run_sync(self._registry.read_deployment)
        except RegistryUnavailable as exc:
            logger.warning("cannot read the deployment spec, keeping it: %s", exc)
            return False
        except BrokenExperiment as exc:
            logger.error("deployment spec unreadable, keeping %s: %s", self._describe(), exc)
            return False
        if record is None or self._serves(record):
            return True
        async with self._lock:
            if self._serves(record):
                return True
            try:
                models = await self._pool.load_all(record.spec.tags)
                check_compatible(record.spec, models)
            except Exception as exc:  # whatever failed, the current plan keeps serving
                self._retain_serving()
                logger.error(
                    "cannot serve the registry's deployment spec (revision %d: %s), keeping %s: %s",
                    record.revision,
                    _summary(record.spec),
                    self._describe(),
                    exc,
                    exc_info=not isinstance(exc, ServiceError),  # a bug: keep its traceback
                )
                return False
            self._install(record, models)
            logger.info(
                "following the registry: revision %d, %s", record.revision, _summary(record.spec)
            )
            return True

    def _serves(self, record: DeploymentRecord) -> bool:
        plan = self._plan
        # The spec too: a registry of the older format (active.json only, revision 0) may
        # name another tag under the same timestamp when edited by hand.
        return (
            plan is not None
            and plan.record.revision == record.revision
            and plan.record.updated_at == record.updated_at
            and plan.record.spec == record.spec
        )

    def _describe(self) -> str:
        plan = self._plan
        return "nothing" if plan is None else _summary(plan.spec)

    # -- installing --------------------------------------------------------------------
    def _install(self, record: DeploymentRecord, models: Mapping[str, LoadedModel]) -> None:
        serving = {tag: models[tag] for tag in record.spec.tags}
        weights = None
        if self._weights is not None and self._weights[0] == record.revision:
            weights = self._weights[1]
        # One reference assignment: requests that already hold the old plan finish with it.
        self._plan = ServingPlan(record, serving, Router(record.spec, weights))
        self._pool.retain(serving)
        self._publish_plan_metrics(self._plan)

    def _publish_plan_metrics(self, plan: ServingPlan) -> None:
        spec = plan.spec
        roles = {tag: (m.meta.model_type, plan.role(tag)) for tag, m in plan.models.items()}
        self._metrics.deployment_installed(
            roles, plan.router.weights, {s.tag: s.percent for s in spec.shadows}
        )
        for tag, model in plan.models.items():
            categorical = [f.name for f in model.meta.features if f.dtype == "category"]
            accuracy = model.meta.metrics.get("accuracy")
            self._metrics.model_series_known(
                tag,
                plan.role(tag),
                categorical,
                spec.primary,
                float(accuracy) if isinstance(accuracy, int | float) else None,
            )

    def _retain_serving(self) -> None:
        plan = self._plan
        self._pool.retain(plan.models if plan is not None else ())

    def release_all(self) -> None:
        self._plan = None
        self._pool.clear()
        self._metrics.not_ready()


def _summary(spec: SpecBody) -> str:
    parts = [f"primary {spec.primary}"]
    parts += [f"candidate {c.tag} {c.weight:g}%" for c in spec.candidates]
    parts += [f"shadow {s.tag} {s.percent:g}%" for s in spec.shadows]
    return ", ".join(parts)
