"""POST /feedback in process: joined to what was predicted, counted once, refused clearly."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from app.container import Container
from app.feedback.ids import RequestIds
from app.settings import Settings
from tests.conftest import FEEDBACK_TOKEN, RedisServer, app_client
from tests.local_server import free_port
from tests.models import model_frame, sample_rows, trained

FEEDBACK = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}
ROWS = sample_rows(3, offset=20)


@pytest.fixture
def feedback_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"feedback_token": SecretStr(FEEDBACK_TOKEN), "feedback_flush_seconds": 0.05}
    )


@pytest.fixture
async def client(feedback_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(feedback_settings) as http:
        yield http


async def predict(http: httpx.AsyncClient, headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = await http.post("/predict", json={"instances": ROWS}, headers=headers or {})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def outcome(name: str) -> float:
    return REGISTRY.get_sample_value("ml_api_feedback_items_total", {"outcome": name}) or 0.0


async def test_a_label_is_joined_to_the_prediction_and_counted_once(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    served = await predict(client)
    predicted = [p["label"] for p in served["predictions"]]
    truth = list(trained("logreg").predict(model_frame(ROWS)))
    wrong = next(c for c in ("Adelie", "Chinstrap", "Gentoo") if c != predicted[1])
    before = (
        REGISTRY.get_sample_value(
            "ml_api_feedback_total", {"model_tag": "base", "role": "primary", "result": "correct"}
        )
        or 0
    )
    first = await client.post(
        "/feedback", json={"request_id": served["request_id"], "label": truth[0]}, headers=FEEDBACK
    )
    assert first.status_code == 200, first.text
    assert first.json()["results"] == [
        {"index": 0, "status": "accepted", "model_tag": "base", "correct": predicted[0] == truth[0]}
    ]
    again = await client.post(
        "/feedback", json={"request_id": served["request_id"], "label": truth[0]}, headers=FEEDBACK
    )
    assert again.json()["results"][0]["status"] == "duplicate"
    assert again.json()["accepted"] == 0
    many = await client.post(
        "/feedback",
        json={
            "items": [
                {"request_id": served["request_id"], "row": 1, "label": wrong},
                {"request_id": served["request_id"], "row": 2, "reward": 0.5},
                {"request_id": served["request_id"], "row": 3, "label": wrong},
            ]
        },
        headers=FEEDBACK,
    )
    body = many.json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (2, 0, 1)
    assert body["results"][0]["correct"] is False
    assert body["results"][2]["status"] == "invalid_row"
    assert "out of range" in body["results"][2]["message"]
    after = REGISTRY.get_sample_value(
        "ml_api_feedback_total", {"model_tag": "base", "role": "primary", "result": "correct"}
    )
    assert after == before + (predicted[0] == truth[0])
    report = (await client.get("/deployment/report", headers=auth)).json()
    quality = report["quality"]["base"]
    assert quality["feedbacks"] == 3
    assert quality["online_accuracy"] == (predicted[0] == truth[0]) / 2
    assert quality["offline_accuracy"] == 0.97
    assert quality["rows_predicted"] >= 3


async def test_refusals_say_why(client: httpx.AsyncClient, feedback_settings: Settings) -> None:
    await predict(client, {"X-Request-ID": "order-77"})
    ours = RequestIds(FEEDBACK_TOKEN.encode())
    old = ours.issue(now=1_000_000.0)  # 1970: long past the retention
    ours_served = (await predict(client))["request_id"]
    tampered = ours_served[:-1] + ("0" if ours_served[-1] != "0" else "1")
    cases = [
        ({"request_id": "has space", "label": "Adelie"}, 422, "malformed_request_id"),
        (
            {"request_id": "mi5k2x1a.3f9a0c1b2d4e5f60.9a8b7c6d5e4f3a2b", "label": "Adelie"},
            403,
            "forged_request_id",
        ),
        ({"request_id": old, "label": "Adelie"}, 410, "expired_request_id"),
        ({"request_id": "never-served", "label": "Adelie"}, 404, "unknown_request_id"),
        ({"request_id": "order-77", "row": 9, "label": "Adelie"}, 422, "invalid_row"),
        ({"request_id": "order-77", "label": "Emperor"}, 422, "unknown_label"),
    ]
    for body, status, code in cases:
        before = outcome(code)
        response = await client.post("/feedback", json=body, headers=FEEDBACK)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]["code"] == code
        assert outcome(code) == before + 1
    # An id we really issued, with one character changed, is forged too.
    response = await client.post(
        "/feedback", json={"request_id": tampered, "label": "Adelie"}, headers=FEEDBACK
    )
    assert response.json()["error"]["code"] == "forged_request_id"
    accepted = await client.post(
        "/feedback", json={"request_id": "order-77", "label": "Adelie"}, headers=FEEDBACK
    )
    assert accepted.status_code == 200


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"request_id": "a"}, "exactly one of label and reward"),
        ({"request_id": "a", "label": "x", "reward": 1}, "exactly one of label and reward"),
        ({"request_id": "a", "reward": 1.5}, "reward"),
        ({"request_id": "a", "reward": -0.1}, "reward"),
        ({"request_id": "a", "row": -1, "label": "x"}, "row"),
        ({"items": []}, "items"),
        ({"request_id": "a", "label": "x", "extra": 1}, "extra"),
        ([], "body"),
    ],
)
async def test_malformed_bodies_are_422_naming_the_field(
    client: httpx.AsyncClient, body: Any, needle: str
) -> None:
    response = await client.post("/feedback", json=body, headers=FEEDBACK)
    assert response.status_code == 422
    assert needle in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-wrong-token"},
        {"Authorization": "Bearer test-admin-token-0123456789"},
    ],
    ids=["none", "wrong", "admin-token"],
)
async def test_feedback_needs_its_own_token(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    served = await predict(client)
    response = await client.post(
        "/feedback", json={"request_id": served["request_id"], "label": "Adelie"}, headers=headers
    )
    assert response.status_code == 401


async def test_feedback_is_off_without_its_token(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    async with app_client(settings) as http:
        response = await http.post(
            "/feedback", json={"request_id": "a", "label": "x"}, headers=FEEDBACK
        )
        served = await predict(http)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "feedback_disabled"
    assert len(served["request_id"]) == 32  # plain ids when nothing verifies them


async def test_a_store_outage_keeps_predictions_flowing_and_answers_503(
    feedback_settings: Settings, tmp_path: Path
) -> None:
    redis = RedisServer(free_port(), tmp_path).start()
    settings = feedback_settings.model_copy(update={"state_url": redis.url})
    try:
        async with app_client(settings) as http:
            served = await predict(http)
            ok = await http.post(
                "/feedback",
                json={"request_id": served["request_id"], "label": "Adelie"},
                headers=FEEDBACK,
            )
            assert ok.status_code == 200
            redis.stop()
            # A caller's id is recorded (ours would carry the prediction itself).
            during = await predict(http, {"X-Request-ID": "during-the-outage"})
            refused = await http.post(
                "/feedback",
                json={"request_id": served["request_id"], "label": "Adelie"},
                headers=FEEDBACK,
            )
            assert refused.status_code == 503
            assert "feedback store (redis) unreachable" in refused.json()["error"]["message"]
            redis.start()
            # What was served during the outage waited in the worker and arrives now.
            late = await http.post(
                "/feedback",
                json={"request_id": during["request_id"], "label": "Adelie"},
                headers=FEEDBACK,
            )
            assert late.status_code == 200, late.text
    finally:
        redis.stop()


async def test_feedback_right_after_the_prediction_is_joined_without_waiting_for_a_flush(
    feedback_settings: Settings,
) -> None:
    # The periodic flush is 10 s away: only writing this worker's buffer before the join finds
    # the prediction at once (without it: a caller's id is unknown, ours waits for the flush).
    slow = feedback_settings.model_copy(update={"feedback_flush_seconds": 10})
    async with app_client(slow) as http:
        await predict(http, {"X-Request-ID": "order-78"})
        ours = (await predict(http))["request_id"]
        for request_id in ("order-78", ours):
            started = time.monotonic()
            response = await http.post(
                "/feedback", json={"request_id": request_id, "label": "Adelie"}, headers=FEEDBACK
            )
            assert response.status_code == 200, response.text
            assert response.json()["results"][0]["status"] == "accepted"
            assert time.monotonic() - started < 5, "waited for the periodic flush"


async def test_our_ids_carry_small_predictions_and_only_large_ones_are_stored(
    feedback_settings: Settings, auth: dict[str, str]
) -> None:
    container = Container(settings=feedback_settings)
    async with app_client(feedback_settings, container=container) as http:
        small = (await predict(http))["request_id"]
        rows = sample_rows(30, offset=40)
        large = (await http.post("/predict", json={"instances": rows})).json()["request_id"]
        await container.recorder().flush()
        store = container.feedback_store()
        assert store is not None
        stored = store().predictions([small, large])
        assert list(stored) == [large]  # the small one was served without writing anything
        assert len(stored[large].labels) == 30
        items = [{"request_id": small, "row": 2, "label": "Adelie"}]
        items += [{"request_id": large, "row": 29, "label": "Adelie"}]
        response = await http.post("/feedback", json={"items": items}, headers=FEEDBACK)
        assert [r["status"] for r in response.json()["results"]] == ["accepted", "accepted"]
        report = (await http.get("/deployment/report", headers=auth)).json()
        assert report["quality"]["base"]["rows_predicted"] == 3 + 30
