"""The deployment: what serves, changed without a failed request, followed across workers."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from dependency_injector import providers
from prometheus_client import REGISTRY

from app.container import Container
from app.errors import (
    ExperimentNotFound,
    IncompatibleSpec,
    ModelRejected,
    NothingToRollBack,
    RegistryUnavailable,
    UnknownCandidate,
)
from app.metrics import ServiceMetrics
from app.registry.spec import Candidate, DeploymentRecord, Shadow, SpecBody
from app.registry.store import ModelRegistry
from app.serving.deployment import Deployment
from app.serving.inputs import InputLimits
from app.serving.model import load_verified
from app.serving.pool import ModelLoader, ModelPool
from app.settings import Settings
from tests.conftest import app_client
from tests.fakes import CountingLoader, GatedLoader, RefusingLoader
from tests.models import publish, publish_numeric, sample_rows

LIMITS = InputLimits(max_rows=100, max_string_length=256)


def make_deployment(registry: ModelRegistry, loader: ModelLoader | None = None) -> Deployment:
    metrics = ServiceMetrics()
    pool = ModelPool(registry, metrics, LIMITS, loader or load_verified)
    return Deployment(registry, pool, metrics)


def spec(
    primary: str,
    candidates: dict[str, float] | None = None,
    shadows: dict[str, float] | None = None,
) -> SpecBody:
    return SpecBody(
        primary=primary,
        candidates=[Candidate(tag=t, weight=w) for t, w in (candidates or {}).items()],
        shadows=[Shadow(tag=t, percent=p) for t, p in (shadows or {}).items()],
    )


@pytest.fixture
def gated() -> GatedLoader:
    return GatedLoader()


@pytest.fixture
async def gated_client(
    settings: Settings, gated: GatedLoader, registry: ModelRegistry
) -> AsyncIterator[httpx.AsyncClient]:
    container = Container(settings=settings)
    container.model_loader.override(providers.Object(gated))
    gated.gate.set()  # the first model loads at once, later ones wait for the test
    async with app_client(settings, container=container) as c:
        gated.gate.clear()
        gated.started.clear()
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


async def test_refused_model_leaves_old_spec_serving_and_in_the_registry(
    registry: ModelRegistry,
) -> None:
    deployment = make_deployment(registry, RefusingLoader("boost"))
    await deployment.sync_with_registry()
    with pytest.raises(ModelRejected):
        await deployment.replace_primary("boost", by="test")
    with pytest.raises(ModelRejected):
        await deployment.change(spec("base", {"boost": 10}), by="test")
    assert deployment.plan().spec == SpecBody(primary="base")
    record = registry.read_deployment()
    assert record is not None
    assert record.spec == SpecBody(primary="base")


class UnwritableRegistry(ModelRegistry):
    """Reads work, writes fail: storage went away in the middle of a change."""

    def write_deployment(self, record: DeploymentRecord) -> None:
        raise RegistryUnavailable("registry unreachable while writing deployment.json")


async def test_storage_outage_during_a_change_fails_cleanly_and_unloads_the_new_model(
    registry_dir: Path,
) -> None:
    deployment = make_deployment(UnwritableRegistry(str(registry_dir)))
    await deployment.sync_with_registry()
    with pytest.raises(RegistryUnavailable):
        await deployment.change(spec("base", {"boost": 50}), by="test")
    assert deployment.plan().spec == SpecBody(primary="base")
    assert deployment._pool.tags == ["base"]


async def test_old_model_is_released_after_its_last_request(registry: ModelRegistry) -> None:
    deployment = make_deployment(registry)
    await deployment.sync_with_registry()
    in_flight = deployment.plan().primary  # a request still holding the old model
    old = weakref.ref(in_flight)
    await deployment.replace_primary("boost", by="test")
    gc.collect()
    assert old() is not None  # still in use by its request
    assert in_flight.tag == "base"
    del in_flight
    gc.collect()
    assert old() is None


async def test_a_model_is_loaded_once_whatever_its_roles_and_unloaded_when_it_leaves(
    registry: ModelRegistry,
) -> None:
    publish(registry, "third", "logreg")
    loader = CountingLoader()
    deployment = make_deployment(registry, loader)
    await deployment.sync_with_registry()
    await deployment.change(spec("base", {"boost": 10}, {"third": 100}), by="test")
    await deployment.change(spec("base", {"third": 10}, {"boost": 50}), by="test")
    await deployment.promote("third", by="test")
    assert loader.loads == {"base": 1, "boost": 1, "third": 1}
    assert deployment._pool.tags == ["third"]
    await deployment.rollback(by="test")  # base and boost had left: both load again
    assert loader.loads == {"base": 2, "boost": 2, "third": 1}
    assert deployment._pool.tags == ["base", "boost", "third"]


async def test_follows_a_spec_changed_by_another_worker(registry: ModelRegistry) -> None:
    mine, other = make_deployment(registry), make_deployment(registry)
    await mine.sync_with_registry()
    await other.sync_with_registry()
    await other.change(spec("base", {"boost": 25}), by="other-worker")
    assert await mine.sync_with_registry() is True
    assert mine.plan().spec == spec("base", {"boost": 25})
    assert mine.plan().router.weights == {"base": 75.0, "boost": 25.0}


async def test_follows_a_registry_written_by_the_previous_version(
    registry: ModelRegistry, registry_dir: Path
) -> None:
    """Only active.json (the format before deployment specs): served as primary-only."""
    assert not (registry_dir / "deployment.json").exists()
    deployment = make_deployment(registry)
    await deployment.sync_with_registry()
    assert deployment.plan().spec == SpecBody(primary="base")
    registry.write_active("boost", updated_by="old-version", previous_tag="base")
    assert await deployment.sync_with_registry() is True
    assert deployment.plan().spec.primary == "boost"


async def test_unreadable_spec_keeps_the_current_plan(
    registry: ModelRegistry, registry_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    deployment = make_deployment(registry)
    await deployment.change(spec("base", {"boost": 10}), by="test")
    (registry_dir / "deployment.json").write_text("{half")
    assert await deployment.sync_with_registry() is False
    assert deployment.plan().spec == spec("base", {"boost": 10})
    assert "deployment spec unreadable" in caplog.text
    # A person's change repairs the file, based on what serves.
    await deployment.change(spec("boost"), by="test")
    record = registry.read_deployment()
    assert record is not None
    assert record.previous == spec("base", {"boost": 10})


async def test_change_records_who_when_why_and_the_spec_before(registry: ModelRegistry) -> None:
    deployment = make_deployment(registry)
    await deployment.sync_with_registry()
    await deployment.change(spec("base", {"boost": 10}), by="alice")
    await deployment.promote("boost", by="bob")
    record = registry.read_deployment()
    assert record is not None
    assert (record.spec, record.updated_by, record.action) == (spec("boost"), "bob", "promote")
    assert record.previous == spec("base", {"boost": 10})
    assert [(c.revision, c.by, c.action) for c in record.history] == [
        (1, "alice", "put"),
        (2, "bob", "promote"),
    ]
    await deployment.rollback(by="carol")
    assert deployment.plan().spec == spec("base", {"boost": 10})


async def test_invalid_changes_are_refused_and_the_old_spec_serves(
    registry: ModelRegistry,
) -> None:
    deployment = make_deployment(registry)
    await deployment.sync_with_registry()
    with pytest.raises(ExperimentNotFound):
        await deployment.change(spec("base", {"nope": 10}), by="test")
    with pytest.raises(UnknownCandidate):
        await deployment.promote("boost", by="test")
    with pytest.raises(NothingToRollBack):
        await make_deployment(registry).rollback(by="test")
    failures = REGISTRY.get_sample_value(
        "ml_api_deployment_changes_total", {"action": "put", "result": "failure"}
    )
    assert failures is not None
    assert failures >= 1
    assert deployment.plan().spec == SpecBody(primary="base")


async def test_models_with_other_features_cannot_serve_together(registry: ModelRegistry) -> None:
    publish_numeric(registry, "numeric")
    deployment = make_deployment(registry)
    await deployment.sync_with_registry()
    with pytest.raises(IncompatibleSpec, match="'numeric' takes features"):
        await deployment.change(spec("base", shadows={"numeric": 100}), by="test")
    assert deployment.plan().spec == SpecBody(primary="base")
    assert deployment._pool.tags == ["base"]


async def test_take_out_gives_the_share_back_and_is_recorded(registry: ModelRegistry) -> None:
    deployment = make_deployment(registry)
    await deployment.change(spec("base", {"boost": 30}), by="alice")
    assert await deployment.take_out("boost", reason="p99 too high") is True
    assert await deployment.take_out("boost", reason="again") is False  # already out
    record = registry.read_deployment()
    assert record is not None
    assert record.spec == spec("base")
    assert (record.action, record.updated_by, record.reason) == (
        "guard",
        "canary-guard",
        "p99 too high",
    )
