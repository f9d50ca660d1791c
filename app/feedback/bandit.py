"""Multi-armed bandits: traffic shares that follow feedback, the same on every worker.

Each arm's evidence is its labelled feedbacks (a correct label is a success) and its rewards
(a reward r counts as r of a success and 1 - r of a failure), under the spec revision that
runs. Thompson sampling shares traffic by each arm's probability of being best under Beta
posteriors; epsilon-greedy gives the arm with the best posterior mean 1 - epsilon of the
traffic and spreads epsilon evenly. Until every arm has ``warmup_feedbacks`` the shares are
uniform, and no arm ever drops below ``min_share`` percent.

Weights are recomputed every ``interval_seconds`` by one worker (a lock in the shared store)
and stored with the revision, so every worker and replica routes alike between
recomputations (and a key stays on its arm between them).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import numpy as np

from app.errors import FeedbackStoreUnavailable
from app.feedback.store import FeedbackStore, revision_scope
from app.metrics import ServiceMetrics
from app.registry.spec import BanditPolicy, SpecBody
from app.serving.deployment import Deployment

logger = logging.getLogger(__name__)

DRAWS = 20_000
TICK_SECONDS = 0.5


@dataclass(frozen=True)
class Evidence:
    successes: float
    failures: float

    @property
    def feedbacks(self) -> float:
        return self.successes + self.failures

    @property
    def posterior_mean(self) -> float:
        return (1 + self.successes) / (2 + self.feedbacks)


def evidence(fields: Mapping[str, float]) -> Evidence:
    labelled, correct = fields.get("label_n", 0.0), fields.get("label_correct", 0.0)
    rewards, reward_sum = fields.get("reward_n", 0.0), fields.get("reward_sum", 0.0)
    return Evidence(correct + reward_sum, (labelled - correct) + (rewards - reward_sum))


def probability_best(arms: Mapping[str, Evidence], seed: int) -> dict[str, float]:
    """Share of posterior draws in which each arm has the highest success rate."""
    rng = np.random.default_rng(seed)
    tags = list(arms)
    draws = np.column_stack(
        [rng.beta(1 + arms[t].successes, 1 + arms[t].failures, DRAWS) for t in tags]
    )
    wins = np.bincount(draws.argmax(axis=1), minlength=len(tags))
    return {tag: float(w) / DRAWS for tag, w in zip(tags, wins, strict=True)}


def shares(policy: BanditPolicy, arms: Mapping[str, Evidence], seed: int) -> dict[str, Any]:
    """Traffic percent per arm, and each arm's posterior mean and probability of being best."""
    tags = list(arms)
    best = probability_best(arms, seed)
    warming = any(arms[t].feedbacks < policy.warmup_feedbacks for t in tags)
    if warming:
        raw = {t: 1 / len(tags) for t in tags}
    elif policy.kind == "thompson":
        raw = best
    else:
        leader = max(tags, key=lambda t: arms[t].posterior_mean)
        raw = {t: policy.epsilon / len(tags) + (1 - policy.epsilon) * (t == leader) for t in tags}
    floor = min(policy.min_share / 100, 1 / len(tags))
    percent = {t: 100 * (floor + (1 - floor * len(tags)) * raw[t]) for t in tags}
    return {
        "weights": percent,
        "warming_up": warming,
        "posterior_mean": {t: arms[t].posterior_mean for t in tags},
        "probability_best": best,
        "feedbacks": {t: arms[t].feedbacks for t in tags},
    }


def state_name(revision: int) -> str:
    return f"bandit:{revision}"


class BanditLoop:
    """Per worker: keep the router on the shared bandit weights of the running spec."""

    def __init__(self, deployment: Deployment, store: Any, metrics: ServiceMetrics) -> None:
        self._deployment = deployment
        self._store = store  # Callable[[], FeedbackStore] | None
        self._metrics = metrics
        self.last: dict[str, Any] | None = None

    async def run(self) -> None:
        if self._store is None:
            return
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                await self.step()
            except FeedbackStoreUnavailable as exc:
                # The router keeps the last weights it had.
                self._metrics.feedback_store_failed("bandit")
                logger.warning("bandit: keeping the last weights: %s", exc.message)

    async def step(self, now: float | None = None) -> dict[str, Any] | None:
        plan = self._deployment.current()
        if plan is None or plan.spec.bandit is None:
            return None
        revision, spec = plan.record.revision, plan.spec
        store: FeedbackStore = self._store()
        state = await anyio.to_thread.run_sync(store.load_state, state_name(revision))
        now = time.time() if now is None else now
        policy = spec.bandit
        assert policy is not None
        stale = state is None or now - state["computed_at"] >= policy.interval_seconds
        if stale and await anyio.to_thread.run_sync(
            store.try_lock, state_name(revision), policy.interval_seconds / 2
        ):
            state = await anyio.to_thread.run_sync(self._compute, store, spec, revision, now)
        if state is None:
            return None  # another worker computes it right now
        candidates = {c.tag: state["weights"][c.tag] for c in spec.candidates}
        if self._deployment.set_weights(revision, candidates):
            self._metrics.bandit_updated(state["probability_best"], state["posterior_mean"])
        self.last = state
        return state

    @staticmethod
    def _compute(store: FeedbackStore, spec: SpecBody, revision: int, now: float) -> dict[str, Any]:
        assert spec.bandit is not None
        totals = store.totals(revision_scope(revision))
        tags = [spec.primary, *(c.tag for c in spec.candidates)]
        arms = {tag: evidence(totals.get(tag, {})) for tag in tags}
        epoch = int(now // spec.bandit.interval_seconds)
        seed = int.from_bytes(
            hashlib.blake2b(f"{revision}:{epoch}".encode(), digest_size=8).digest()
        )
        state = shares(spec.bandit, arms, seed) | {"computed_at": now, "revision": revision}
        store.save_state(state_name(revision), state)
        logger.info("bandit weights for revision %d: %s", revision, state["weights"])
        return state
