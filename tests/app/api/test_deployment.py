"""GET/PUT /deployment, promote, rollback, and the roles in the experiment listing."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from app.registry.store import ModelRegistry
from app.settings import Settings
from tests.conftest import app_client
from tests.models import publish, publish_numeric, sample_rows

SPLIT = {"primary": "base", "candidates": [{"tag": "boost", "weight": 30}]}


async def put(http: httpx.AsyncClient, body: Any, auth: dict[str, str]) -> httpx.Response:
    return await http.put("/deployment", json=body, headers=auth)


async def test_a_split_is_written_served_and_described(
    client: httpx.AsyncClient, auth: dict[str, str], registry: ModelRegistry
) -> None:
    response = await put(client, SPLIT, auth)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["revision"] == 1
    assert body["spec"]["candidates"] == [{"tag": "boost", "weight": 30.0}]
    assert body["previous"]["primary"] == "base"  # from active.json, the older format
    record = registry.read_deployment()
    assert record is not None
    assert record.spec.model_dump() == body["spec"]
    served: Counter[str] = Counter()
    for i in range(300):
        answer = await client.post(
            "/predict", json={"instances": sample_rows(1)}, headers={"X-ML-API-Key": f"u{i}"}
        )
        served[answer.json()["model_tag"]] += 1
    assert set(served) == {"base", "boost"}
    arms = {
        a["tag"]: a
        for a in (await client.get("/deployment", headers=auth)).json()["figures"]["arms"]
    }
    assert arms["base"]["configured_percent"] == 70.0
    assert arms["boost"]["configured_percent"] == 30.0
    assert arms["boost"]["requests"] >= served["boost"]
    assert arms["boost"]["latency_p99_ms"] > 0


async def test_same_key_same_arm(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    await put(client, SPLIT, auth)
    for user in ("alice", "bob", "carol", "dave"):
        tags = set()
        for _ in range(10):
            answer = await client.post(
                "/predict", json={"instances": sample_rows(1)}, headers={"X-ML-API-Key": user}
            )
            tags.add(answer.json()["model_tag"])
        assert len(tags) == 1


async def test_promote_rollback_and_replace(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    await put(client, SPLIT, auth)
    promoted = await client.post("/deployment/promote", json={"tag": "boost"}, headers=auth)
    assert promoted.status_code == 200, promoted.text
    spec = promoted.json()["spec"]
    assert (spec["primary"], spec["candidates"]) == ("boost", [])
    back = await client.post("/deployment/rollback", headers=auth)
    assert back.status_code == 200
    assert back.json()["spec"]["candidates"] == [{"tag": "boost", "weight": 30.0}]
    replaced = await client.post("/replace_ml_model", json={"tag": "boost"}, headers=auth)
    assert replaced.json() | {"load_ms": 0} == {
        "previous_tag": "base",
        "active_tag": "boost",
        "load_ms": 0,
    }
    described = (await client.get("/deployment", headers=auth)).json()
    assert (described["spec"]["primary"], described["spec"]["candidates"]) == ("boost", [])
    assert [h["action"] for h in described["history"]] == ["put", "promote", "rollback", "replace"]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"primary": "nope"}, 404, "no experiment with tag 'nope'"),
        ({"primary": "base", "candidates": [{"tag": "nope", "weight": 5}]}, 404, "'nope'"),
        ({"primary": "base", "candidates": [{"tag": "boost", "weight": 150}]}, 422, "weight"),
        (
            {
                "primary": "base",
                "candidates": [{"tag": "boost", "weight": 60}, {"tag": "third", "weight": 60}],
            },
            422,
            "add up to 120",
        ),
        ({"primary": "base", "shadows": [{"tag": "base", "percent": 10}]}, 422, "appears twice"),
        ({"primary": "../etc"}, 422, "invalid experiment tag"),
        ({"primary": "base", "candidates": "boost"}, 422, "candidates"),
        ({"primary": "base", "weights": {"boost": 5}}, 422, "weights"),
        ({"candidates": []}, 422, "primary"),
        ([], 422, "body"),
        ("x" * 10, 422, "body"),
        ({"primary": 5}, 422, "primary"),
        ({"primary": "base", "shadows": [{"tag": "numeric", "percent": 5}]}, 422, "features"),
        ({"primary": "base", "candidates": [{"tag": "tampered", "weight": 5}]}, 422, "sha256"),
    ],
)
async def test_invalid_specs_are_refused_and_the_old_one_serves(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    registry: ModelRegistry,
    registry_dir: Path,
    body: Any,
    status: int,
    needle: str,
) -> None:
    publish(registry, "third", "logreg")
    publish_numeric(registry, "numeric")
    publish(registry, "tampered", "logreg")
    model = registry_dir / "experiments" / "tampered" / "model.skops"
    model.write_bytes(model.read_bytes() + b"\0")
    response = await put(client, body, auth)
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]["message"]
    answer = await client.post("/predict", json={"instances": sample_rows(1)})
    assert answer.json()["model_tag"] == "base"
    assert not (registry_dir / "deployment.json").exists()


async def test_body_that_is_not_json_is_a_clean_4xx(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    response = await client.put(
        "/deployment", content=b"{not json", headers={**auth, "content-type": "application/json"}
    )
    assert 400 <= response.status_code < 500
    assert response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/deployment", None),
        ("PUT", "/deployment", SPLIT),
        ("POST", "/deployment/promote", {"tag": "boost"}),
        ("POST", "/deployment/rollback", None),
    ],
)
@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong-token-wrong-token"}], ids=["none", "wrong"]
)
async def test_management_needs_the_token(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str],
    registry_dir: Path,
) -> None:
    response = await client.request(method, path, json=body, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert not (registry_dir / "deployment.json").exists()


async def test_management_is_off_without_a_configured_token(registry_dir: Path) -> None:
    settings = Settings(registry_url=str(registry_dir))
    async with app_client(settings) as http:
        response = await http.get("/deployment", headers={"Authorization": "Bearer " + "x" * 20})
    assert response.status_code == 403


async def test_promote_and_rollback_refuse_what_does_not_apply(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    not_candidate = await client.post("/deployment/promote", json={"tag": "boost"}, headers=auth)
    assert not_candidate.status_code == 409
    assert "not a candidate" in not_candidate.json()["error"]["message"]
    nothing = await client.post("/deployment/rollback", headers=auth)
    assert nothing.status_code == 409  # active.json names no previous tag


async def test_listing_shows_roles_shares_and_pages(
    client: httpx.AsyncClient, auth: dict[str, str], registry: ModelRegistry
) -> None:
    for i in range(5):
        publish(registry, f"extra-{i}", "logreg")
    await put(client, {**SPLIT, "shadows": [{"tag": "extra-0", "percent": 25}]}, auth)
    response = await client.get("/get_experiment_metas", params={"limit": 100})
    assert response.headers["x-total-count"] == "7"
    by_tag = {e["tag"]: e for e in response.json()}
    assert (
        by_tag["base"]["role"],
        by_tag["base"]["traffic_percent"],
        by_tag["base"]["active"],
    ) == ("primary", 70.0, True)
    assert (by_tag["boost"]["role"], by_tag["boost"]["traffic_percent"]) == ("candidate", 30.0)
    assert (by_tag["extra-0"]["role"], by_tag["extra-0"]["traffic_percent"]) == ("shadow", 25.0)
    assert (by_tag["extra-1"]["role"], by_tag["extra-1"]["active"]) == (None, False)

    first = (await client.get("/get_experiment_metas", params={"limit": 3})).json()
    rest = (await client.get("/get_experiment_metas", params={"limit": 3, "offset": 3})).json()
    everything = [e["tag"] for e in response.json()]
    assert [e["tag"] for e in first + rest] == everything[:6]
    hgb = await client.get("/get_experiment_metas", params={"model_type": "hgb"})
    assert [e["tag"] for e in hgb.json()] == ["boost"]
    assert hgb.headers["x-total-count"] == "1"


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 1001}, {"offset": -1}, {"limit": "x"}])
async def test_listing_refuses_bad_paging(
    client: httpx.AsyncClient, params: dict[str, Any]
) -> None:
    response = await client.get("/get_experiment_metas", params=params)
    assert response.status_code == 422
    assert next(iter(params)) in response.json()["error"]["message"]


async def test_changes_are_counted(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    def count(result: str) -> float:
        labels = {"action": "put", "result": result}
        return REGISTRY.get_sample_value("ml_api_deployment_changes_total", labels) or 0

    ok, failed = count("success"), count("failure")
    await put(client, SPLIT, auth)
    await put(client, {"primary": "nope"}, auth)
    assert (count("success"), count("failure")) == (ok + 1, failed + 1)
