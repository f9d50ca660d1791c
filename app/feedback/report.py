"""The experiment report: online quality per model, A/B statistics, the bandit's state.

Read from the shared feedback store, so every worker and replica tells the same story. A
loop exports the running split's figures as gauges for the Experiments dashboard.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

import anyio.to_thread

from app.errors import FeedbackStoreUnavailable
from app.feedback.bandit import state_name
from app.feedback.stats import ab_report
from app.feedback.store import ALL, FeedbackStore, revision_scope
from app.metrics import ServiceMetrics
from app.serving.deployment import Deployment, ServingPlan

logger = logging.getLogger(__name__)

EXPORT_SECONDS = 5.0


def online_quality(plan: ServingPlan, totals: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """Per model of the deployment: online accuracy beside the offline one from meta.json."""
    quality: dict[str, Any] = {}
    for tag, model in plan.models.items():
        fields = totals.get(tag, {})
        labelled = fields.get("label_n", 0.0)
        feedbacks = fields.get("feedbacks", 0.0)
        rows = fields.get("rows", 0.0)
        offline = model.meta.metrics.get("accuracy")
        quality[tag] = {
            "role": plan.role(tag),
            "rows_predicted": int(rows),
            "feedbacks": int(feedbacks),
            "feedback_share": feedbacks / rows if rows else None,
            "online_accuracy": fields.get("label_correct", 0.0) / labelled if labelled else None,
            "offline_accuracy": offline if isinstance(offline, int | float) else None,
            "mean_reward": (
                fields.get("reward_sum", 0.0) / fields["reward_n"]
                if fields.get("reward_n")
                else None
            ),
            "mean_feedback_delay_seconds": (
                fields.get("delay_sum", 0.0) / feedbacks if feedbacks else None
            ),
        }
    return quality


def experiment_report(plan: ServingPlan, store: FeedbackStore) -> dict[str, Any]:
    revision = plan.record.revision
    report: dict[str, Any] = {
        "revision": revision,
        "quality": online_quality(plan, store.totals(ALL)),
        "ab": None,
        "bandit": None,
    }
    if plan.spec.candidates:
        report["ab"] = ab_report(plan.spec, store.totals(revision_scope(revision)))
    if plan.spec.bandit is not None:
        report["bandit"] = store.load_state(state_name(revision))
    return report


class ReportExporter:
    """Per worker: the running split's A/B figures as gauges, every few seconds."""

    def __init__(
        self,
        deployment: Deployment,
        store: Callable[[], FeedbackStore] | None,
        metrics: ServiceMetrics,
    ) -> None:
        self._deployment = deployment
        self._store = store
        self._metrics = metrics

    async def run(self) -> None:
        if self._store is None:
            return
        while True:
            await asyncio.sleep(EXPORT_SECONDS)
            plan = self._deployment.current()
            if plan is None or not plan.spec.candidates:
                continue
            store = self._store()
            try:
                totals = await anyio.to_thread.run_sync(
                    store.totals, revision_scope(plan.record.revision)
                )
            except FeedbackStoreUnavailable as exc:
                self._metrics.feedback_store_failed("report")
                logger.warning("A/B figures not exported: %s", exc.message)
                continue
            self._metrics.ab_reported(ab_report(plan.spec, totals))
