"""The canary guard: a candidate worse than the primary goes, and stays out."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from dependency_injector import providers
from prometheus_client import REGISTRY

from app.container import Container
from app.metrics import ServiceMetrics
from app.registry.spec import Candidate, DeploymentRecord, GuardSettings, SpecBody
from app.serving.deployment import Deployment, ServingPlan
from app.serving.guard import ArmFigures, CanaryGuard, _judge_one
from app.serving.routing import Router
from app.settings import Settings
from tests.conftest import app_client
from tests.fakes import FailingRuntime, RuntimeSwappingLoader
from tests.models import sample_rows

SETTINGS = GuardSettings(
    min_requests=100, max_error_rate_increase=0.02, max_p99_ratio=2.0, p99_slack_ms=5
)


def test_no_verdict_before_enough_requests() -> None:
    bad = ArmFigures(requests=99, errors=99, p99_seconds=9.0)
    assert _judge_one("c", bad, ArmFigures(1000, 0, 0.001), SETTINGS) is None


def test_error_rate_beyond_the_margin_takes_the_candidate_out() -> None:
    primary = ArmFigures(1000, 10, 0.001)  # 1 %
    assert _judge_one("c", ArmFigures(100, 3, 0.001), primary, SETTINGS) is None  # 3 %: +2 %
    verdict = _judge_one("c", ArmFigures(100, 4, 0.001), primary, SETTINGS)  # 4 %: +3 %
    assert verdict is not None
    assert verdict.reason == "error_rate"
    assert "4.0% over 100 requests" in verdict.detail


def test_p99_beyond_ratio_plus_slack_takes_the_candidate_out() -> None:
    primary = ArmFigures(1000, 0, 0.010)  # bound: 2 × 10 ms + 5 ms = 25 ms
    assert _judge_one("c", ArmFigures(200, 0, 0.024), primary, SETTINGS) is None
    verdict = _judge_one("c", ArmFigures(200, 0, 0.026), primary, SETTINGS)
    assert verdict is not None
    assert verdict.reason == "latency"
    assert "allowed: 25.0 ms" in verdict.detail


def test_latency_is_not_judged_on_a_primary_without_traffic() -> None:
    assert _judge_one("c", ArmFigures(200, 0, 1.0), ArmFigures(5, 0, 0.001), SETTINGS) is None


def test_windows_start_clean_with_each_spec_revision() -> None:
    guard = CanaryGuard(Deployment.__new__(Deployment), ServiceMetrics())
    spec = SpecBody(primary="p", candidates=[Candidate(tag="c", weight=10)], guard=SETTINGS)
    record = DeploymentRecord.first(spec, at=datetime.now(UTC), by="t", action="put")
    plan = ServingPlan(record, {}, Router(spec))
    assert guard.judge(plan) == []  # nothing observed yet
    for _ in range(150):
        guard.observe(record.revision, "p", 0.001, ok=True)
        guard.observe(record.revision, "c", 0.001, ok=False)
    assert [v.reason for v in guard.judge(plan)] == ["error_rate"]
    later = record.successor(spec, at=datetime.now(UTC), by="t", action="put")
    assert guard.judge(ServingPlan(later, {}, Router(spec))) == []
    guard.observe(later.revision, "c", 0.001, ok=False)  # the new spec's first request
    assert guard.figures("c", 60).requests == 1


async def test_a_failing_canary_costs_users_nothing_and_is_taken_out(
    settings: Settings, auth: dict[str, str]
) -> None:
    container = Container(settings=settings)
    container.model_loader.override(
        providers.Object(RuntimeSwappingLoader({"boost": lambda r: FailingRuntime()}))
    )
    events = (
        REGISTRY.get_sample_value(
            "ml_api_canary_guard_events_total", {"model_tag": "boost", "reason": "error_rate"}
        )
        or 0
    )
    async with app_client(settings, container=container) as http:
        spec = {
            "primary": "base",
            "candidates": [{"tag": "boost", "weight": 50}],
            "guard": {"min_requests": 10},
        }
        assert (await http.put("/deployment", json=spec, headers=auth)).status_code == 200
        answers = [
            await http.post(
                "/predict", json={"instances": sample_rows(1)}, headers={"X-ML-API-Key": f"u{i}"}
            )
            for i in range(60)
        ]
        assert {a.status_code for a in answers} == {200}
        assert {a.json()["model_tag"] for a in answers} == {"base"}  # the primary answered
        deployment: Deployment = container.deployment()
        async with asyncio.timeout(10):
            while deployment.plan().spec.candidates:  # noqa: ASYNC110 - the guard acts in 1 s
                await asyncio.sleep(0.05)
        described = (await http.get("/deployment", headers=auth)).json()
    assert described["spec"]["candidates"] == []
    assert described["action"] == "guard"
    assert described["updated_by"] == "canary-guard"
    assert "error rate 100.0%" in described["reason"]
    assert described["history"][-1]["action"] == "guard"
    assert (
        REGISTRY.get_sample_value(
            "ml_api_canary_guard_events_total", {"model_tag": "boost", "reason": "error_rate"}
        )
        == events + 1
    )
