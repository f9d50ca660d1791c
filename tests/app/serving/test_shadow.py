"""Shadows: mirrored after the answer, never changing it, compared, dropped when too many."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest
from dependency_injector import providers
from prometheus_client import REGISTRY

from app.container import Container
from app.serving.runtime import Runtime
from app.serving.shadow import ShadowMirror
from app.settings import Settings
from tests.conftest import app_client
from tests.fakes import FailingRuntime, GatedRuntime, RecordingRuntime, RuntimeSwappingLoader
from tests.models import model_frame, sample_rows, trained

ROWS = sample_rows(60, offset=0) + sample_rows(60, offset=150) + sample_rows(60, offset=270)
PAIR = {"primary_tag": "base", "shadow_tag": "boost"}


def value(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def shadow_everything(http: httpx.AsyncClient, auth: dict[str, str]) -> None:
    response = await http.put(
        "/deployment",
        json={"primary": "base", "shadows": [{"tag": "boost", "percent": 100}]},
        headers=auth,
    )
    assert response.status_code == 200, response.text


@pytest.fixture
async def mirrored(
    settings: Settings, auth: dict[str, str]
) -> AsyncIterator[tuple[httpx.AsyncClient, Container]]:
    container = Container(settings=settings)
    async with app_client(settings, container=container) as http:
        await shadow_everything(http, auth)
        yield http, container


async def test_shadow_never_changes_the_answer_and_its_agreement_is_measured(
    mirrored: tuple[httpx.AsyncClient, Container], auth: dict[str, str]
) -> None:
    http, container = mirrored
    before = {n: value(f"ml_api_shadow_{n}_total", PAIR) for n in ("rows", "agreements")}
    answers = [(await http.post("/predict", json={"instances": [row]})).json() for row in ROWS]
    await container.shadow_mirror().drained()

    assert {a["model_tag"] for a in answers} == {"base"}
    got = np.array(
        [
            [p["probabilities"][c] for c in sorted(p["probabilities"])]
            for a in answers
            for p in a["predictions"]
        ]
    )
    expected = trained("logreg").predict_proba(model_frame(ROWS))
    np.testing.assert_allclose(got, expected, atol=1e-4)  # exactly the primary's answers

    base = trained("logreg").predict(model_frame(ROWS))
    boost = trained("hgb").predict(model_frame(ROWS))
    agreeing = int((base == boost).sum())
    assert value("ml_api_shadow_rows_total", PAIR) - before["rows"] == len(ROWS)
    assert value("ml_api_shadow_agreements_total", PAIR) - before["agreements"] == agreeing
    figures = (await http.get("/deployment", headers=auth)).json()["figures"]
    (shadow,) = figures["shadows"]
    assert shadow["tag"] == "boost"
    assert shadow["rows_compared"] >= len(ROWS)
    assert 0 < shadow["label_agreement"] <= 1
    assert shadow["shadow_latency_p50_ms"] is not None


async def test_full_queue_drops_mirrors_and_counts_them_never_the_answer(
    settings: Settings, auth: dict[str, str]
) -> None:
    gate = threading.Event()
    container = Container(settings=settings)
    container.model_loader.override(
        providers.Object(RuntimeSwappingLoader({"boost": lambda r: GatedRuntime(r, gate)}))
    )
    container.shadow_mirror.override(
        providers.Singleton(
            ShadowMirror,
            metrics=container.metrics,
            queue_size=2,
            batch_rows=1,  # one mirror per call: the first call holds the task
            in_flight=container.in_flight,
        )
    )
    dropped = value("ml_api_shadow_dropped_total", {"shadow_tag": "boost", "reason": "queue_full"})
    try:
        async with app_client(settings, container=container) as http:
            await shadow_everything(http, auth)
            answers = await asyncio.wait_for(
                asyncio.gather(
                    *(http.post("/predict", json={"instances": [row]}) for row in ROWS[:20])
                ),
                timeout=10,  # the stuck shadow must not hold any answer
            )
            assert {a.status_code for a in answers} == {200}
            assert {a.json()["model_tag"] for a in answers} == {"base"}
            now = value(
                "ml_api_shadow_dropped_total", {"shadow_tag": "boost", "reason": "queue_full"}
            )
            # One mirror is being scored (stuck), two wait: the other 17 are dropped.
            assert now - dropped >= 17
    finally:
        gate.set()


async def test_a_failing_shadow_is_counted_and_never_reaches_the_client(
    settings: Settings, auth: dict[str, str]
) -> None:
    container = Container(settings=settings)
    failing: dict[str, Any] = {"boost": lambda r: FailingRuntime()}
    container.model_loader.override(providers.Object(RuntimeSwappingLoader(failing)))
    errors = value("ml_api_shadow_errors_total", PAIR)
    async with app_client(settings, container=container) as http:
        await shadow_everything(http, auth)
        answers = [await http.post("/predict", json={"instances": [row]}) for row in ROWS[:10]]
        await container.shadow_mirror().drained()
    assert {a.status_code for a in answers} == {200}
    assert value("ml_api_shadow_errors_total", PAIR) - errors == 10


async def test_every_mirrored_request_counts_once_for_the_shadow_when_scored_together(
    mirrored: tuple[httpx.AsyncClient, Container],
) -> None:
    http, container = mirrored
    served = {"model_tag": "boost", "role": "shadow"}
    before = value("ml_api_model_inference_seconds_count", served)
    # Concurrent requests: their mirrors gather and are scored in shared calls.
    await asyncio.gather(*(http.post("/predict", json={"instances": [row]}) for row in ROWS[:40]))
    await container.shadow_mirror().drained()
    assert value("ml_api_model_inference_seconds_count", served) - before == 40


async def test_mirrors_of_a_steady_stream_are_scored_together_then_at_once_when_it_stops(
    settings: Settings, auth: dict[str, str]
) -> None:
    """One client sending request after request (both models scored inline, so no request is
    ever "in a call" when the mirror looks): the mirrors wait for the stream and share calls;
    once no request came for a poll, they are scored without waiting out the deferral."""
    recordings: dict[str, RecordingRuntime] = {}

    def record(runtime: Runtime) -> Runtime:
        return recordings.setdefault("boost", RecordingRuntime(runtime))

    container = Container(settings=settings)
    container.model_loader.override(
        providers.Object(RuntimeSwappingLoader({"boost": record}, inline=True))
    )
    container.shadow_mirror.override(
        providers.Singleton(
            ShadowMirror,
            metrics=container.metrics,
            queue_size=1000,
            batch_rows=256,
            in_flight=container.in_flight,
            poll_seconds=0.25,  # far longer than one request takes here, even on a busy CI
            max_defer_seconds=30,
        )
    )
    async with app_client(settings, container=container) as http:
        await shadow_everything(http, auth)
        for row in ROWS[:30]:
            answer = await http.post("/predict", json={"instances": [row]})
            assert answer.json()["model_tag"] == "base"
            await asyncio.sleep(0)  # a server reads its sockets between requests
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(container.shadow_mirror().drained(), timeout=10)
        waited = asyncio.get_running_loop().time() - started
    calls = recordings["boost"].calls
    assert sum(calls) == 30
    assert len(calls) <= 3, calls  # one mirror per call before the fix: 30 calls
    assert waited < 5  # one quiet poll ends the wait, not the 30 s deferral
