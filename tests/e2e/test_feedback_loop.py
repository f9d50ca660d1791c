"""The feedback loop end to end: two ``ml-api serve`` processes (one with 2 workers) share a
registry and a real Redis; clients predict and send the true labels back.

- a Thompson-sampling bandit moves traffic to the better of two experiments of truly
  different quality, and the A/B report finds the difference without a sample-ratio flag;
- a biased key population is flagged as a sample-ratio mismatch;
- the online-accuracy alert fires for the weaker primary on a real Prometheus.
"""

from __future__ import annotations

import random
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.registry.spec import Candidate, SpecBody
from app.registry.store import ModelRegistry
from app.serving.routing import Router
from tests.conftest import FEEDBACK_TOKEN
from tests.e2e.server import Server, auth_headers, revision_reached
from tests.models import labelled_rows, publish_island_biased
from tests.monitoring.prometheus import ALERTS, fast_rules, running_prometheus

pytestmark = pytest.mark.e2e

FEEDBACK = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}
ROWS = labelled_rows(seed=11)


@pytest.fixture(scope="module")
def servers(
    seed_registry: Path, redis_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Server]]:
    root = tmp_path_factory.mktemp("feedback-loop") / "registry"
    shutil.copytree(seed_registry, root)
    publish_island_biased(ModelRegistry(str(root)), "weak")
    env = {
        "ML_API_FEEDBACK_TOKEN": FEEDBACK_TOKEN,
        "ML_API_STATE_URL": redis_server.url,
        "ML_API_FEEDBACK_FLUSH_SECONDS": "0.05",
    }
    with (
        Server(str(root), workers=2, poll_seconds=0.3, env=env) as a,
        Server(str(root), poll_seconds=0.3, env=env) as b,
    ):
        yield a, b


def put_spec(url: str, spec: dict[str, Any]) -> int:
    response = httpx.put(f"{url}/deployment", json=spec, headers=auth_headers(), timeout=30)
    assert response.status_code == 200, response.text
    revision: int = response.json()["revision"]
    return revision


def wait_for_revision(servers: tuple[Server, ...], revision: int) -> None:
    for server in servers:
        revision_reached(server.url, revision, workers=server.workers)


def serve_and_label(
    servers: tuple[Server, ...],
    rows: list[tuple[dict[str, Any], str]],
    keys: list[str] | None = None,
) -> Counter[str]:
    """Predict every row (alternating servers), then send all the true labels back at once."""
    served: Counter[str] = Counter()
    items = []
    for i, (row, label) in enumerate(rows):
        server = servers[i % len(servers)]
        headers = {} if keys is None else {"X-ML-API-Key": keys[i]}
        answer = httpx.post(f"{server.url}/predict", json={"instances": [row]}, headers=headers)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        served[body["model_tag"]] += 1
        items.append({"request_id": body["request_id"], "label": label})
    response = httpx.post(
        f"{servers[-1].url}/feedback", json={"items": items}, headers=FEEDBACK, timeout=60
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(items), response.json()["results"][:3]
    return served


def report(url: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/deployment/report", headers=auth_headers(), timeout=30)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_the_online_accuracy_alert_fires_for_the_weaker_primary(
    servers: tuple[Server, Server], tmp_path: Path
) -> None:
    a, b = servers
    revision = put_spec(a.url, {"primary": "weak"})
    wait_for_revision(servers, revision)
    rules = fast_rules(ALERTS, tmp_path / "alerts.yml", {"[1h]": "[5m]"})
    targets = [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]
    with running_prometheus(tmp_path, targets, [rules]) as prometheus:
        prometheus.wait_for('ml_api_model_offline_accuracy{model_tag="weak"}')
        serve_and_label(servers, ROWS[:120])
        quality = report(b.url)["quality"]["weak"]
        assert quality["offline_accuracy"] == 1.0
        assert quality["online_accuracy"] < 0.9
        deadline_rounds = 120
        for _ in range(deadline_rounds):
            firing = prometheus.firing("MlApiOnlineAccuracyBelowOffline")
            if firing:
                break
            prometheus.wait_for("up", timeout=5)
            httpx.get(f"{a.url}/v2/health/live")
        assert [f["labels"]["model_tag"] for f in firing] == ["weak"]


def test_thompson_sampling_moves_traffic_to_the_better_model(
    servers: tuple[Server, Server],
) -> None:
    a, b = servers
    spec = {
        "primary": "weak",
        "candidates": [{"tag": "base", "weight": 50}],
        "bandit": {
            "kind": "thompson",
            "warmup_feedbacks": 20,
            "min_share": 2,
            "interval_seconds": 1,
        },
        "guard": {"enabled": False},
    }
    revision = put_spec(a.url, spec)
    wait_for_revision(servers, revision)
    shares = []
    for round_index in range(10):
        start = (round_index * 30) % (len(ROWS) - 30)
        served = serve_and_label(servers, ROWS[start : start + 30])
        shares.append(served["base"] / sum(served.values()))
        bandit = report(a.url)["bandit"]
        # Wait for the next recomputation to see this round's feedback.
        for _ in range(100):
            state = report(a.url)["bandit"]
            if state and bandit and state["computed_at"] > bandit["computed_at"]:
                break
            httpx.get(f"{a.url}/v2/health/live")
    # After a bounded number of feedbacks (10 rounds of 30), the better model takes the traffic.
    assert sum(shares[-3:]) / 3 >= 0.8, shares
    final = report(b.url)  # the other process tells the same story (shared store)
    assert final["bandit"]["probability_best"]["base"] > 0.95
    versus = final["ab"]["arms"]["base"]["versus_primary"]
    assert versus["z_test_p"] < 0.05
    assert versus["difference"] > 0
    assert final["ab"]["sample_ratio"]["mismatch"] is False, final["ab"]["sample_ratio"]


def test_a_biased_key_population_is_flagged_as_a_sample_ratio_mismatch(
    servers: tuple[Server, Server],
) -> None:
    a, _ = servers
    spec = {
        "primary": "base",
        "candidates": [{"tag": "boost", "weight": 50}],
        "guard": {"enabled": False},
    }
    revision = put_spec(a.url, spec)
    wait_for_revision(servers, revision)
    router = Router(SpecBody(primary="base", candidates=[Candidate(tag="boost", weight=50)]))
    # A splitter that loses half of one arm's users (say, a client that drops them).
    keys = [f"user-{i}" for i in range(2000)]
    biased = [k for i, k in enumerate(keys) if router.choose(k) == "base" or i % 2][:400]
    rng = random.Random(5)
    rows = [ROWS[rng.randrange(len(ROWS))] for _ in biased]
    served = serve_and_label(servers, rows, keys=biased)
    assert served["base"] > 1.5 * served["boost"]
    srm = report(a.url)["ab"]["sample_ratio"]
    assert srm["mismatch"] is True, srm
    assert srm["chi_square_p"] < 0.001
