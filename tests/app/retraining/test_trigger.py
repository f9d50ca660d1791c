"""The retraining trigger, in process, with Alertmanager-shaped payloads and a recording
GitLab: what triggers, what is skipped and why, what a cool-down and a dry run do."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from app.settings import Settings
from tests.conftest import FEEDBACK_TOKEN, app_client
from tests.models import sample_rows
from tests.recording_server import RecordingServer

WEBHOOK_TOKEN = "test-webhook-token-0123456789"
HOOK = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}


def alert(name: str, tag: str = "base", status: str = "firing", **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": name, "model_tag": tag, **labels},
        "annotations": {"summary": f"{name} on {tag}"},
        "startsAt": (datetime.now(UTC) - timedelta(minutes=20)).isoformat(),
        "fingerprint": f"{name}-{tag}-{labels.get('feature', '')}"[:32],
    }


def payload(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "4",
        "status": "firing",
        "receiver": "ml-api-retrain",
        "alerts": list(alerts),
    }


@pytest.fixture
def gitlab() -> Iterator[RecordingServer]:
    with RecordingServer() as server:
        yield server


def trigger_settings(settings: Settings, gitlab_url: str, **extra: Any) -> Settings:
    return settings.model_copy(
        update={
            "webhook_token": SecretStr(WEBHOOK_TOKEN),
            "feedback_token": SecretStr(FEEDBACK_TOKEN),
            "gitlab_url": gitlab_url,
            "gitlab_project": "group/ml-api",
            "gitlab_trigger_token": SecretStr("glptt-trigger-token"),
            "retrain_min_drift_rows": 20,
            "retrain_min_feedbacks": 50,
            **extra,
        }
    )


@pytest.fixture
async def client(settings: Settings, gitlab: RecordingServer) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(trigger_settings(settings, gitlab.url)) as http:
        for start in range(0, 40, 10):  # some traffic: rows behind a drift alert
            await http.post("/predict", json={"instances": sample_rows(10, offset=start)})
        yield http


async def send(http: httpx.AsyncClient, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = await http.post("/alerts/webhook", json=body, headers=HOOK)
    assert response.status_code == 200, response.text
    decisions: list[dict[str, Any]] = response.json()["decisions"]
    return decisions


async def test_drift_on_the_primary_triggers_once_with_the_reason(
    client: httpx.AsyncClient, gitlab: RecordingServer, auth: dict[str, str]
) -> None:
    drift = payload(
        alert("MlApiInputDrift", feature="bill_length_mm"),
        alert("MlApiInputDrift", feature="island"),
    )
    (decision,) = await send(client, drift)
    assert (decision["outcome"], decision["model_tag"]) == ("triggered", "base")
    (call,) = gitlab.calls
    assert call.path == "/api/v4/projects/group%2Fml-api/trigger/pipeline"
    assert call.form["token"] == "glptt-trigger-token"
    assert call.form["ref"] == "main"
    assert call.form["variables[ACTIVE_TAG]"] == "base"
    assert call.form["variables[RETRAIN_KIND]"] == "drift"
    assert call.form["variables[DRIFTED_FEATURES]"].startswith("bill_length_mm=")
    assert "island=" in call.form["variables[DRIFTED_FEATURES]"]
    assert "MlApiInputDrift on base" in call.form["variables[RETRAIN_REASON]"]
    # Alertmanager repeats the alert: inside the cool-down nothing more is triggered.
    (again,) = await send(client, drift)
    assert (again["outcome"], again["reason"]) == ("skipped", "cooldown")
    assert len(gitlab.calls) == 1
    listed = (await client.get("/retraining/decisions", headers=auth)).json()
    assert [d["reason"] for d in listed[:2]] == ["cooldown", "triggered"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (payload(alert("MlApiInputDrift", status="resolved", feature="x")), "not_firing"),
        (payload(alert("MlApiHighP99Latency")), "not_a_retraining_alert"),
        (payload(alert("MlApiInputDrift", tag="boost", feature="x")), "not_the_primary"),
        (payload(alert("MlApiOnlineAccuracyBelowOffline")), "too_few_feedbacks"),
    ],
)
async def test_what_does_not_trigger_says_why(
    client: httpx.AsyncClient, gitlab: RecordingServer, body: dict[str, Any], reason: str
) -> None:
    before = (
        REGISTRY.get_sample_value(
            "ml_api_retrain_decisions_total", {"outcome": "skipped", "reason": reason}
        )
        or 0
    )
    (decision,) = await send(client, body)
    assert (decision["outcome"], decision["reason"]) == ("skipped", reason)
    assert decision["detail"]
    assert gitlab.calls == []
    assert (
        REGISTRY.get_sample_value(
            "ml_api_retrain_decisions_total", {"outcome": "skipped", "reason": reason}
        )
        == before + 1
    )


async def test_drift_on_too_few_rows_is_skipped(
    settings: Settings, gitlab: RecordingServer
) -> None:
    # Rows are read from this process's metrics, which earlier tests in the session add to.
    async with app_client(
        trigger_settings(settings, gitlab.url, retrain_min_drift_rows=10**12)
    ) as http:
        (decision,) = await send(http, payload(alert("MlApiInputDrift", feature="x")))
    assert decision["reason"] == "too_few_rows"
    assert f"fewer than {10**12}" in decision["detail"]
    assert gitlab.calls == []


async def test_a_dry_run_decides_and_records_but_never_calls_gitlab(
    settings: Settings,
    gitlab: RecordingServer,
    auth: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="app.retraining")
    async with app_client(trigger_settings(settings, gitlab.url, retrain_dry_run=True)) as http:
        await http.post("/predict", json={"instances": sample_rows(30)})
        (decision,) = await send(http, payload(alert("MlApiInputDrift", feature="x")))
        listed = (await http.get("/retraining/decisions", headers=auth)).json()
    assert decision["outcome"] == "dry_run"
    assert decision["variables"]["ACTIVE_TAG"] == "base"
    assert gitlab.calls == []
    assert listed[0]["outcome"] == "dry_run"
    assert "retraining dry_run for base" in caplog.text


async def test_a_gitlab_failure_is_recorded_and_the_next_alert_retries(
    client: httpx.AsyncClient, gitlab: RecordingServer
) -> None:
    gitlab.status = 500
    (failed,) = await send(client, payload(alert("MlApiInputDrift", feature="x")))
    assert (failed["outcome"], failed["reason"]) == ("failed", "trigger_failed")
    assert "500" in failed["detail"]
    gitlab.status = 201
    (retried,) = await send(client, payload(alert("MlApiInputDrift", feature="x")))
    assert retried["outcome"] == "triggered"
    assert len(gitlab.calls) == 2


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer test-admin-token-0123456789"}], ids=["none", "admin"]
)
async def test_the_webhook_needs_its_own_token(
    client: httpx.AsyncClient, gitlab: RecordingServer, headers: dict[str, str]
) -> None:
    response = await client.post(
        "/alerts/webhook", json=payload(alert("MlApiInputDrift", feature="x")), headers=headers
    )
    assert response.status_code == 401
    assert gitlab.calls == []


@pytest.mark.parametrize("body", [{}, {"alerts": "x"}, {"alerts": [{"labels": "x"}]}, []])
async def test_a_malformed_payload_is_a_422(client: httpx.AsyncClient, body: Any) -> None:
    response = await client.post("/alerts/webhook", json=body, headers=HOOK)
    assert response.status_code == 422
    assert response.json()["error"]["message"]


def test_tokens_must_differ_and_gitlab_settings_go_together() -> None:
    with pytest.raises(ValueError, match="must all differ"):
        Settings(admin_token="same-token-0123456789", webhook_token="same-token-0123456789")
    with pytest.raises(ValueError, match="go together"):
        Settings(gitlab_url="http://gitlab.example")
