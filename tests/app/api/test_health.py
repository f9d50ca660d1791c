from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from tests.conftest import ADMIN_TOKEN


async def test_live_and_ready(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v2/health/live")).status_code == 200
    ready = await client.get("/v2/health/ready")
    assert ready.status_code == 200
    body = ready.json()
    assert (body["status"], body["model_tag"]) == ("ready", "base")
    # The worker says since when it serves that model: it loaded it at start-up, just now.
    since = datetime.fromisoformat(body["serving_since"])
    assert timedelta(0) <= datetime.now(UTC) - since < timedelta(minutes=5)


async def test_serving_since_moves_with_a_swap(client: httpx.AsyncClient) -> None:
    before = datetime.fromisoformat((await client.get("/v2/health/ready")).json()["serving_since"])
    swapped = await client.post(
        "/replace_ml_model",
        json={"tag": "boost"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert swapped.status_code == 200
    after = (await client.get("/v2/health/ready")).json()
    assert after["model_tag"] == "boost"
    assert datetime.fromisoformat(after["serving_since"]) > before


async def test_metrics_exposes_service_metrics(client: httpx.AsyncClient) -> None:
    await client.get("/get_experiment_metas")
    text = (await client.get("/metrics")).text
    assert (
        'ml_api_http_requests_total{handler="/get_experiment_metas",method="GET",status="200"}'
        in text
    )
    assert "ml_api_model_ready 1.0" in text
    assert 'handler="/metrics"' not in text


async def test_unknown_path_is_json_404_with_bounded_label(client: httpx.AsyncClient) -> None:
    response = await client.get("/no/such/path/123")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "http_error"
    text = (await client.get("/metrics")).text
    assert "/no/such/path" not in text


async def test_openapi_documents_both_body_types(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    content = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(content)
    assert (await client.get("/docs")).status_code == 200
