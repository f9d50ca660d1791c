from __future__ import annotations

from pathlib import Path

import httpx

from app.registry.store import ModelRegistry
from tests.models import publish


async def test_lists_experiments_newest_first_with_active_flag(
    client: httpx.AsyncClient, registry: ModelRegistry
) -> None:
    publish(registry, "newest", "logreg")
    response = await client.get("/get_experiment_metas")
    assert response.status_code == 200
    body = response.json()
    assert [e["tag"] for e in body] == ["newest", "boost", "base"]
    assert [e["active"] for e in body] == [False, False, True]
    boost = body[1]
    assert boost["model_type"] == "hgb"
    assert boost["metrics"] == {"accuracy": 0.98}
    assert boost["params"] == {"type": "hgb"}
    assert boost["created_at"]


async def test_broken_meta_is_listed_as_broken_others_unaffected(
    client: httpx.AsyncClient, registry_dir: Path
) -> None:
    (registry_dir / "experiments" / "boost" / "meta.json").write_text("{not json")
    body = (await client.get("/get_experiment_metas")).json()
    by_tag = {e["tag"]: e for e in body}
    assert by_tag["boost"]["broken"] is True
    assert "meta.json" in by_tag["boost"]["error"]
    assert by_tag["base"]["broken"] is False
    assert by_tag["base"]["active"] is True
