"""Live experiments end to end: real ``ml-api serve`` processes, splits, stickiness, shadows,
the canary guard, and a spec followed by every worker and replica (local folder and S3)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from scipy.stats import chisquare

from app.registry.store import ModelRegistry
from tests.e2e.server import Server, auth_headers, new_connection, revision_reached
from tests.models import model_frame, publish_without_imputer, sample_rows, trained

pytestmark = pytest.mark.e2e

ROW = sample_rows(1)
KEYS = [f"user-{i}" for i in range(40)]


def put_spec(url: str, spec: dict[str, Any]) -> dict[str, Any]:
    response = httpx.put(f"{url}/deployment", json=spec, headers=auth_headers(), timeout=30)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def tag_for(url: str, key: str) -> str:
    status, body = new_connection(
        url, "POST", "/predict", {"instances": ROW}, {"X-ML-API-Key": key}
    )
    assert status == 200, body
    tag: str = body["model_tag"]
    return tag


async def _count_tags(url: str, n: int, clients: int = 4) -> dict[str, int]:
    counts: dict[str, int] = {}

    async def client(share: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            for _ in range(share):
                answer = await http.post("/predict", json={"instances": ROW})
                assert answer.status_code == 200, answer.text
                tag = answer.json()["model_tag"]
                counts[tag] = counts.get(tag, 0) + 1

    await asyncio.gather(*(client(n // clients) for _ in range(clients)))
    return counts


@pytest.fixture(scope="module")
def two_workers(seed_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    import shutil

    root = tmp_path_factory.mktemp("experiments") / "registry"
    shutil.copytree(seed_registry, root)
    env = {"ML_API_SHADOW_QUEUE_SIZE": "16"}
    with Server(str(root), workers=2, poll_seconds=0.5, env=env) as server:
        yield server, root


def test_a_90_10_split_holds_and_keys_are_sticky_across_workers(two_workers: Any) -> None:
    server, _ = two_workers
    # The guard stays off: the gradient-boosting candidate is slower, and the guard would
    # rightly take it out in the middle of the count (tests/app/serving/test_guard.py).
    spec = {
        "primary": "base",
        "candidates": [{"tag": "boost", "weight": 10}],
        "guard": {"enabled": False},
    }
    revision_reached(server.url, put_spec(server.url, spec)["revision"], workers=2)
    counts = asyncio.run(_count_tags(server.url, 3000))
    observed = [counts.get("base", 0), counts.get("boost", 0)]
    assert sum(observed) == 3000
    # p > 0.001: a correct router fails this one run in a thousand, a 80/20 router always.
    assert chisquare(observed, [2700, 300]).pvalue > 0.001, observed
    first = {key: tag_for(server.url, key) for key in KEYS}
    for _ in range(3):  # every connection may land on either worker
        assert {key: tag_for(server.url, key) for key in KEYS} == first
    assert set(first.values()) == {"base", "boost"} or len(KEYS) < 20


def test_a_shadow_never_changes_answers_and_its_figures_appear(two_workers: Any) -> None:
    server, _ = two_workers
    described = put_spec(
        server.url, {"primary": "base", "shadows": [{"tag": "boost", "percent": 100}]}
    )
    revision_reached(server.url, described["revision"], workers=2)
    rows = sample_rows(40, offset=100)
    expected = trained("logreg").predict_proba(model_frame(rows))
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for i, row in enumerate(rows):
            body = http.post("/predict", json={"instances": [row]}).json()
            assert body["model_tag"] == "base"
            got = [
                body["predictions"][0]["probabilities"][c]
                for c in ("Adelie", "Chinstrap", "Gentoo")
            ]
            assert got == pytest.approx(expected[i].tolist(), abs=1e-4)

    def shadow_figures() -> dict[str, Any]:
        figures = httpx.get(f"{server.url}/deployment", headers=auth_headers()).json()["figures"]
        (shadow,) = figures["shadows"]
        result: dict[str, Any] = shadow
        return result

    # Every mirror is compared or, when the small queue is full, dropped and counted.
    deadline = time.monotonic() + 10
    while (figures := shadow_figures())["rows_compared"] + figures["dropped"] < 40:
        assert time.monotonic() < deadline, figures
        time.sleep(0.1)  # the mirror task scores after the answers: nothing to await here
    assert shadow_figures()["rows_compared"] >= 20
    shadow = shadow_figures()
    assert 0.5 < shadow["label_agreement"] <= 1.0
    assert shadow["mean_max_probability_diff"] > 0
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'ml_api_shadow_agreements_total{primary_tag="base",shadow_tag="boost"}' in metrics


def test_a_full_shadow_queue_drops_and_counts_never_the_answer(two_workers: Any) -> None:
    server, _ = two_workers
    put_spec(server.url, {"primary": "base", "shadows": [{"tag": "boost", "percent": 100}]})

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            answers = await asyncio.gather(
                *(http.post("/predict", json={"instances": sample_rows(5)}) for _ in range(300))
            )
        return [a.status_code for a in answers]

    def dropped() -> float:
        figures = httpx.get(f"{server.url}/deployment", headers=auth_headers()).json()["figures"]
        return float(figures["shadows"][0]["dropped"])

    before = dropped()
    assert set(asyncio.run(burst())) == {200}
    assert dropped() > before


def test_an_invalid_spec_is_refused_and_the_old_spec_keeps_serving(two_workers: Any) -> None:
    server, root = two_workers
    current = json.loads((root / "deployment.json").read_text())
    for spec, status, needle in [
        ({"primary": "base", "candidates": [{"tag": "ghost", "weight": 5}]}, 404, "'ghost'"),
        ({"primary": "base", "candidates": [{"tag": "boost", "weight": 101}]}, 422, "weight"),
        (
            {
                "primary": "base",
                "shadows": [{"tag": "boost", "percent": 5}],
                "candidates": [{"tag": "boost", "weight": 5}],
            },
            422,
            "appears twice",
        ),
    ]:
        response = httpx.put(f"{server.url}/deployment", json=spec, headers=auth_headers())
        assert response.status_code == status, response.text
        assert needle in response.json()["error"]["message"]
    assert json.loads((root / "deployment.json").read_text()) == current
    assert tag_for(server.url, "anyone") == "base"


def test_a_failing_canary_is_taken_out_by_the_guard(seed_registry: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "registry"
    shutil.copytree(seed_registry, root)
    publish_without_imputer(ModelRegistry(str(root)), "brittle")
    env = {"ML_API_RUNTIME": "sklearn"}  # scikit-learn refuses the NaN that ONNX would pass on
    with Server(str(root), workers=2, poll_seconds=0.5, env=env) as server:
        put_spec(
            server.url,
            {
                "primary": "base",
                "candidates": [{"tag": "brittle", "weight": 50}],
                "guard": {"min_requests": 20},
            },
        )
        incomplete = [ROW[0] | {"body_mass_g": None}]
        with httpx.Client(base_url=server.url, timeout=30) as http:
            answers = [
                http.post(
                    "/predict", json={"instances": incomplete}, headers={"X-ML-API-Key": f"k{i}"}
                )
                for i in range(200)
            ]
        assert {a.status_code for a in answers} == {200}  # the primary answered for the canary
        assert {a.json()["model_tag"] for a in answers} == {"base"}
        deadline = time.monotonic() + 15
        while True:
            described = httpx.get(f"{server.url}/deployment", headers=auth_headers()).json()
            if not described["spec"]["candidates"]:
                break
            assert time.monotonic() < deadline, described
            time.sleep(0.2)
        assert described["action"] == "guard"
        assert "error rate" in described["reason"]
        metrics = httpx.get(f"{server.url}/metrics").text
        assert (
            'ml_api_canary_guard_events_total{model_tag="brittle",reason="error_rate"} 1.0'
            in metrics
        )


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_a_spec_reaches_every_worker_and_replica_in_time_and_survives_a_restart(
    storage: str, registry_dir: Path, request: pytest.FixtureRequest
) -> None:
    url = str(registry_dir) if storage == "local" else request.getfixturevalue("s3_registry_url")
    poll = 0.5
    with Server(url, workers=2, poll_seconds=poll) as a:
        b = Server(url, poll_seconds=poll).start()
        try:
            described = put_spec(
                b.url,
                {
                    "primary": "base",
                    "candidates": [{"tag": "boost", "weight": 50}],
                    "guard": {"enabled": False},
                },
            )
            record = ModelRegistry(url).read_deployment()
            assert record is not None
            assert record.revision == described["revision"]
            installed = revision_reached(a.url, record.revision, workers=2)
            installed += revision_reached(b.url, record.revision, workers=1)
            delays = [(at - record.updated_at).total_seconds() for at in installed]
            assert max(delays) <= poll + 1.0, f"the spec reached the workers after {delays} s"
            on_a = {key: tag_for(a.url, key) for key in KEYS}
            assert {key: tag_for(b.url, key) for key in KEYS} == on_a
            assert set(on_a.values()) == {"base", "boost"}
        finally:
            b.stop()
        again = Server(url, poll_seconds=poll).start()
        try:
            assert {key: tag_for(again.url, key) for key in KEYS} == on_a
        finally:
            again.stop()
