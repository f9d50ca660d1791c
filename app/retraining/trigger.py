"""The trigger decides: which monitoring alerts start a retraining, and which do not, and why.

Alertmanager posts the alerts it routes to ml-api. For each model named by a firing drift or
online-quality alert, the trigger starts a retraining only when all of these hold:

1. the alert is firing (Prometheus fires only after the rule's ``for:`` window) and has been
   for at least ``min_firing_seconds``;
2. the model is the deployment's primary (a canary or shadow is judged by the canary guard
   and the A/B report, not retrained);
3. enough data stands behind it: ``min_drift_rows`` rows served by the model for drift,
   ``min_feedbacks`` labelled feedbacks for quality;
4. no retraining was triggered for that model within ``cooldown_seconds`` (a lock in the
   shared store: Alertmanager repeats alerts, and every worker and replica receives them).

Alerts of one model in one payload (drift on several features, say) make one decision. In
dry-run mode the decision is made and recorded but GitLab is not called. Every decision —
triggered, skipped and why, failed — is logged, counted and kept in the shared store for the
management API.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import anyio.to_thread

from app.errors import ServiceError
from app.feedback.store import ALL, FeedbackStore
from app.metrics import ServiceMetrics, current_samples
from app.retraining.alerts import Alert, AlertmanagerPayload
from app.retraining.gitlab import GitLabTrigger
from app.serving.deployment import Deployment

logger = logging.getLogger(__name__)

RETRAINING_ALERTS = {"MlApiInputDrift": "drift", "MlApiOnlineAccuracyBelowOffline": "quality"}
DECISIONS = "retrain-decisions"
KEEP_DECISIONS = 200

Outcome = Literal["triggered", "skipped", "dry_run", "failed"]


@dataclass(frozen=True)
class TriggerSettings:
    dry_run: bool
    cooldown_seconds: float
    min_drift_rows: int
    min_feedbacks: int
    min_firing_seconds: float
    data_source: str | None


@dataclass
class Decision:
    at: str
    model_tag: str | None
    alerts: list[str]
    outcome: Outcome
    reason: str
    detail: str
    variables: dict[str, str] = field(default_factory=dict)
    pipeline: dict[str, Any] | None = None


@dataclass(frozen=True)
class Evidence:
    rows: int
    feedbacks: int
    psi: dict[str, float]


class RetrainTrigger:
    def __init__(
        self,
        deployment: Deployment,
        store: Callable[[], FeedbackStore],
        metrics: ServiceMetrics,
        gitlab: GitLabTrigger | None,
        settings: TriggerSettings,
    ) -> None:
        self._deployment = deployment
        self._store = store
        self._metrics = metrics
        self._gitlab = gitlab
        self._settings = settings

    async def handle(self, payload: AlertmanagerPayload) -> list[Decision]:
        decisions: list[Decision] = []
        by_model: dict[str, list[Alert]] = {}
        for alert in payload.alerts:
            skipped = self._screen(alert)
            if skipped is not None:
                decisions.append(skipped)
            else:
                by_model.setdefault(alert.labels["model_tag"], []).append(alert)
        for tag, alerts in by_model.items():
            decisions.append(await self._decide(tag, alerts))
        for decision in decisions:
            await self._record(decision)
        return decisions

    def _screen(self, alert: Alert) -> Decision | None:
        """The checks that need no data: firing, a retraining alert, on the primary."""
        tag = alert.labels.get("model_tag")
        if alert.status != "firing":
            return _decision(tag, [alert], "skipped", "not_firing", f"the alert is {alert.status}")
        if alert.name not in RETRAINING_ALERTS:
            return _decision(
                tag,
                [alert],
                "skipped",
                "not_a_retraining_alert",
                f"{alert.name or 'an unnamed alert'} does not start a retraining "
                f"(only {', '.join(sorted(RETRAINING_ALERTS))})",
            )
        if alert.startsAt is not None:
            firing_for = (datetime.now(UTC) - alert.startsAt).total_seconds()
            if firing_for < self._settings.min_firing_seconds:
                return _decision(
                    tag,
                    [alert],
                    "skipped",
                    "not_firing_long_enough",
                    f"firing for {firing_for:.0f} s, less than "
                    f"{self._settings.min_firing_seconds:g} s (ML_API_RETRAIN_MIN_FIRING_SECONDS)",
                )
        plan = self._deployment.current()
        primary = plan.spec.primary if plan is not None else None
        if tag is None or tag != primary:
            return _decision(
                tag,
                [alert],
                "skipped",
                "not_the_primary",
                f"the alert concerns {tag or 'no model'}, the primary is {primary}",
            )
        return None

    async def _decide(self, tag: str, alerts: list[Alert]) -> Decision:
        kinds = {RETRAINING_ALERTS[a.name] for a in alerts}
        evidence = await anyio.to_thread.run_sync(self._evidence, tag)
        if "quality" in kinds and evidence.feedbacks < self._settings.min_feedbacks:
            return _decision(
                tag,
                alerts,
                "skipped",
                "too_few_feedbacks",
                f"{evidence.feedbacks} labelled feedbacks for {tag}, fewer than "
                f"{self._settings.min_feedbacks} (ML_API_RETRAIN_MIN_FEEDBACKS)",
            )
        if "drift" in kinds and evidence.rows < self._settings.min_drift_rows:
            return _decision(
                tag,
                alerts,
                "skipped",
                "too_few_rows",
                f"{evidence.rows} rows served by {tag}, fewer than "
                f"{self._settings.min_drift_rows} (ML_API_RETRAIN_MIN_DRIFT_ROWS)",
            )
        variables = self._variables(tag, alerts, kinds, evidence)
        if self._settings.dry_run:
            return _decision(
                tag,
                alerts,
                "dry_run",
                "dry_run",
                "dry run (ML_API_RETRAIN_DRY_RUN): GitLab was not called",
                variables,
            )
        return await self._trigger(tag, alerts, variables)

    async def _trigger(self, tag: str, alerts: list[Alert], variables: dict[str, str]) -> Decision:
        if self._gitlab is None:
            return _decision(
                tag,
                alerts,
                "skipped",
                "not_configured",
                "no GitLab trigger configured (ML_API_GITLAB_URL, ML_API_GITLAB_PROJECT, "
                "ML_API_GITLAB_TRIGGER_TOKEN)",
                variables,
            )
        store = self._store()
        lock = f"retrain:{tag}"
        if not await anyio.to_thread.run_sync(
            store.try_lock, lock, self._settings.cooldown_seconds
        ):
            return _decision(
                tag,
                alerts,
                "skipped",
                "cooldown",
                f"a retraining of {tag} was triggered within the last "
                f"{self._settings.cooldown_seconds:g} s (ML_API_RETRAIN_COOLDOWN_SECONDS)",
                variables,
            )
        try:
            pipeline = await anyio.to_thread.run_sync(self._gitlab.trigger, variables)
        except ServiceError as exc:
            await anyio.to_thread.run_sync(store.release_lock, lock)  # the next alert retries
            return _decision(tag, alerts, "failed", "trigger_failed", exc.message, variables)
        decision = _decision(
            tag,
            alerts,
            "triggered",
            "triggered",
            f"pipeline {pipeline.get('id')} started ({pipeline.get('web_url', '')})",
            variables,
        )
        decision.pipeline = {k: pipeline.get(k) for k in ("id", "iid", "web_url", "ref")}
        return decision

    def _evidence(self, tag: str) -> Evidence:
        rows = 0.0
        psi: dict[str, float] = {}
        for name, labels, value in current_samples("ml_api_"):
            if labels.get("model_tag") != tag:
                continue
            if name == "ml_api_predictions_total" and labels.get("role") != "shadow":
                rows += value
            elif name == "ml_api_input_drift_psi":
                psi[labels["feature"]] = max(value, psi.get(labels["feature"], 0.0))
        feedbacks = self._store().totals(ALL).get(tag, {}).get("label_n", 0.0)
        return Evidence(int(rows), int(feedbacks), psi)

    def _variables(
        self, tag: str, alerts: list[Alert], kinds: set[str], evidence: Evidence
    ) -> dict[str, str]:
        features = sorted({a.labels["feature"] for a in alerts if "feature" in a.labels})
        drifted = ",".join(f"{f}={evidence.psi.get(f, float('nan')):.3f}" for f in features)
        summaries = "; ".join(a.annotations.get("summary", a.name) for a in alerts)
        variables = {
            "RETRAIN_REASON": f"{'+'.join(sorted(kinds))} on {tag}: {summaries}"[:1000],
            "RETRAIN_KIND": "+".join(sorted(kinds)),
            "DRIFTED_FEATURES": drifted,
            "ACTIVE_TAG": tag,
            "ALERT_FINGERPRINTS": ",".join(sorted(a.fingerprint for a in alerts if a.fingerprint)),
        }
        if self._settings.data_source:
            variables["DATA_SOURCE"] = self._settings.data_source
        return variables

    async def _record(self, decision: Decision) -> None:
        log = logger.warning if decision.outcome in {"triggered", "failed"} else logger.info
        log(
            "retraining %s for %s (%s): %s",
            decision.outcome,
            decision.model_tag,
            ", ".join(decision.alerts),
            decision.detail,
        )
        self._metrics.retrain_decided(decision.outcome, decision.reason)
        try:
            await anyio.to_thread.run_sync(
                self._store().append_event, DECISIONS, asdict(decision), KEEP_DECISIONS
            )
        except ServiceError as exc:
            logger.error("retraining decision not stored: %s", exc.message)

    def decisions(self, limit: int) -> list[dict[str, Any]]:
        return self._store().events(DECISIONS, limit)


def _decision(
    tag: str | None,
    alerts: list[Alert],
    outcome: Outcome,
    reason: str,
    detail: str,
    variables: Mapping[str, str] | None = None,
) -> Decision:
    return Decision(
        at=datetime.now(UTC).isoformat(),
        model_tag=tag,
        alerts=[
            f"{a.name}{'/' + a.labels['feature'] if 'feature' in a.labels else ''}" for a in alerts
        ],
        outcome=outcome,
        reason=reason,
        detail=detail,
        variables=dict(variables or {}),
    )
