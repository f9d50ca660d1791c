from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from dependency_injector import providers

from app.container import Container
from app.errors import ModelRejected, RegistryUnavailable
from app.metrics import ServiceMetrics
from app.registry.meta import ActivePointer
from app.registry.store import ModelRegistry
from app.serving.holder import ModelHolder
from app.serving.inputs import InputLimits
from app.settings import Settings
from tests.conftest import app_client
from tests.fakes import GatedLoader, RefusingLoader
from tests.models import sample_rows

LIMITS = InputLimits(max_rows=100, max_string_length=256)


@pytest.fixture
def gated() -> GatedLoader:
    return GatedLoader()


@pytest.fixture
async def gated_client(
    settings: Settings, gated: GatedLoader, registry: ModelRegistry
) -> AsyncIterator[httpx.AsyncClient]:
    container = Container(settings=settings)
    holder = ModelHolder(registry, ServiceMetrics(), LIMITS, loader=gated)
    gated.gate.set()  # the first model loads at once, later ones wait for the test
    await holder.sync_with_registry()
    gated.gate.clear()
    gated.started.clear()
    container.model_holder.override(providers.Object(holder))
    async with app_client(settings, container=container) as c:
        yield c


async def test_old_model_serves_while_the_new_one_loads(
    gated_client: httpx.AsyncClient, gated: GatedLoader, auth: dict[str, str]
) -> None:
    swap = asyncio.create_task(
        gated_client.post("/replace_ml_model", json={"tag": "boost"}, headers=auth)
    )
    await asyncio.to_thread(gated.started.wait, 10)
    during = [
        await gated_client.post("/predict", json={"instances": sample_rows(1)}) for _ in range(5)
    ]
    assert [r.json()["model_tag"] for r in during] == ["base"] * 5
    assert not swap.done()
    gated.gate.set()
    response = await swap
    assert response.status_code == 200
    after = await gated_client.post("/predict", json={"instances": sample_rows(1)})
    assert after.json()["model_tag"] == "boost"


async def test_refused_model_leaves_old_model_and_pointer(registry: ModelRegistry) -> None:
    holder = ModelHolder(registry, ServiceMetrics(), LIMITS, loader=RefusingLoader("boost"))
    await holder.sync_with_registry()
    with pytest.raises(ModelRejected):
        await holder.replace("boost", requested_by="test")
    assert holder.active().tag == "base"
    pointer = registry.read_active()
    assert pointer is not None
    assert pointer.tag == "base"


class UnwritableRegistry(ModelRegistry):
    """Reads work, writes fail: storage went away in the middle of a swap."""

    def write_active(self, tag: str, *, updated_by: str, previous_tag: str | None) -> ActivePointer:
        raise RegistryUnavailable("registry unreachable while writing active.json")


async def test_storage_outage_during_swap_fails_cleanly(registry_dir: Path) -> None:
    registry = UnwritableRegistry(str(registry_dir))
    holder = ModelHolder(registry, ServiceMetrics(), LIMITS)
    await holder.sync_with_registry()
    with pytest.raises(RegistryUnavailable):
        await holder.replace("boost", requested_by="test")
    assert holder.active().tag == "base"


async def test_old_model_is_released_after_its_last_request(registry: ModelRegistry) -> None:
    holder = ModelHolder(registry, ServiceMetrics(), LIMITS)
    await holder.sync_with_registry()
    in_flight = holder.active()  # a request still holding the old model
    old = weakref.ref(in_flight)
    await holder.replace("boost", requested_by="test")
    gc.collect()
    assert old() is not None  # still in use by its request
    assert in_flight.tag == "base"
    del in_flight
    gc.collect()
    assert old() is None


async def test_follows_pointer_moved_by_another_worker(registry: ModelRegistry) -> None:
    holder = ModelHolder(registry, ServiceMetrics(), LIMITS)
    await holder.sync_with_registry()
    registry.write_active("boost", updated_by="other-worker", previous_tag="base")
    assert await holder.sync_with_registry() is True
    assert holder.active().tag == "boost"


async def test_unreadable_pointer_keeps_current_model(
    registry: ModelRegistry, registry_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    holder = ModelHolder(registry, ServiceMetrics(), LIMITS)
    await holder.sync_with_registry()
    (registry_dir / "active.json").write_text("{half")
    assert await holder.sync_with_registry() is False
    assert holder.active().tag == "base"
    assert "active pointer unreadable" in caplog.text
