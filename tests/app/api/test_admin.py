from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from app.registry.store import ModelRegistry
from app.settings import Settings
from tests.conftest import app_client
from tests.models import sample_rows


def _swaps(result: str) -> float:
    return REGISTRY.get_sample_value("ml_api_model_swaps_total", {"result": result}) or 0.0


async def test_replace_swaps_and_persists_pointer(
    client: httpx.AsyncClient, auth: dict[str, str], registry: ModelRegistry
) -> None:
    before = _swaps("success")
    response = await client.post("/replace_ml_model", json={"tag": "boost"}, headers=auth)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["previous_tag"] == "base"
    assert body["active_tag"] == "boost"
    assert body["load_ms"] > 0
    predicted = await client.post("/predict", json={"instances": sample_rows(1)})
    assert predicted.json()["model_tag"] == "boost"
    pointer = registry.read_active()
    assert pointer is not None
    assert (pointer.tag, pointer.previous_tag) == ("boost", "base")
    assert _swaps("success") == before + 1
    assert (
        REGISTRY.get_sample_value(
            "ml_api_model_info", {"model_tag": "boost", "model_type": "hgb", "role": "primary"}
        )
        == 1
    )
    assert (
        REGISTRY.get_sample_value(
            "ml_api_model_info", {"model_tag": "base", "model_type": "logreg", "role": "primary"}
        )
        == 0
    )


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong-token-wrong-token"}, 401),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 401),
    ],
)
async def test_replace_without_valid_token_is_401(
    client: httpx.AsyncClient, headers: dict[str, str], status: int
) -> None:
    response = await client.post("/replace_ml_model", json={"tag": "boost"}, headers=headers)
    assert response.status_code == status
    assert response.headers["www-authenticate"] == "Bearer"
    still = await client.post("/predict", json={"instances": sample_rows(1)})
    assert still.json()["model_tag"] == "base"


async def test_replace_unknown_tag_returns_404(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    response = await client.post("/replace_ml_model", json={"tag": "nope"}, headers=auth)
    assert response.status_code == 404
    assert "nope" in response.json()["error"]["message"]


@pytest.mark.parametrize("tag", ["../etc", "a/b", ".hidden", "", "x" * 65, "tag with space"])
async def test_replace_rejects_unsafe_tags(
    client: httpx.AsyncClient, auth: dict[str, str], tag: str
) -> None:
    response = await client.post("/replace_ml_model", json={"tag": tag}, headers=auth)
    assert response.status_code == 422
    assert response.json()["error"]["message"]


async def test_replace_with_missing_body_field_names_it(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    response = await client.post("/replace_ml_model", json={"name": "boost"}, headers=auth)
    assert response.status_code == 422
    assert "tag" in response.json()["error"]["message"]


async def test_tampered_model_is_refused_and_old_model_keeps_serving(
    client: httpx.AsyncClient, auth: dict[str, str], registry_dir: Path
) -> None:
    model_file = registry_dir / "experiments" / "boost" / "model.skops"
    model_file.write_bytes(model_file.read_bytes() + b"tampered")
    before = _swaps("failure")
    response = await client.post("/replace_ml_model", json={"tag": "boost"}, headers=auth)
    assert response.status_code == 422
    assert "sha256" in response.json()["error"]["message"]
    assert _swaps("failure") == before + 1
    still = await client.post("/predict", json={"instances": sample_rows(1)})
    assert still.json()["model_tag"] == "base"


async def test_management_disabled_without_configured_token(registry_dir: Path) -> None:
    async with app_client(Settings(registry_url=str(registry_dir))) as http:
        response = await http.post(
            "/replace_ml_model", json={"tag": "boost"}, headers={"Authorization": "Bearer x"}
        )
    assert response.status_code == 403
    assert "ML_API_ADMIN_TOKEN" in response.json()["error"]["message"]


async def test_concurrent_swaps_are_serialised(
    client: httpx.AsyncClient, auth: dict[str, str], registry: ModelRegistry
) -> None:
    tags = ["boost", "base", "boost", "base", "boost"]
    responses = await asyncio.gather(
        *(client.post("/replace_ml_model", json={"tag": t}, headers=auth) for t in tags)
    )
    assert all(r.status_code == 200 for r in responses)
    # Serialised: each swap's "previous" is the tag the swap before it installed.
    chain = [(r.json()["previous_tag"], r.json()["active_tag"]) for r in responses]
    installed = {active for _, active in chain}
    previous = {prev for prev, _ in chain}
    assert previous <= installed | {"base"}
    final = (await client.post("/predict", json={"instances": sample_rows(1)})).json()
    pointer = registry.read_active()
    assert pointer is not None
    assert final["model_tag"] == pointer.tag
