from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client import REGISTRY

from app.metrics import INPUT_DRIFT_PSI
from app.serving.drift import DriftMonitor, feature_psi, profile_training_data
from app.serving.inputs import Batch, InputLimits, InputSchema
from tests.models import features, penguins, sample_rows

ALERTS = Path(__file__).resolve().parents[3] / "prometheus" / "alerts.yml"


def alert_threshold() -> float:
    """The PSI above which the drift alert fires, read from the alert rules."""
    match = re.search(r"ml_api_input_drift_psi\)\s*>\s*([0-9.]+)", ALERTS.read_text())
    assert match, "drift alert rule not found"
    return float(match.group(1))


def _profiles() -> dict[str, Any]:
    frame = penguins()
    return profile_training_data(frame[[f.name for f in features()]], features())


def _psi_of(rows: list[dict[str, Any]]) -> dict[str, float]:
    schema = InputSchema(features(), InputLimits(max_rows=10_000, max_string_length=256))
    batch = schema.rows_to_batch(rows)
    monitor = DriftMonitor(window_rows=1000)
    monitor.record("m", batch)
    return monitor.compute(_profiles(), "m")


def _shifted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        row | {"body_mass_g": None if row["body_mass_g"] is None else row["body_mass_g"] + 1500}
        for row in rows
    ]


def test_unshifted_inputs_keep_psi_low() -> None:
    rng = np.random.default_rng(0)
    rows = sample_rows(344)
    picked = [rows[i] for i in rng.choice(len(rows), size=300, replace=False)]
    psi = _psi_of(picked)
    assert set(psi) == {f.name for f in features()}
    assert max(psi.values()) < 0.1


def test_shifted_numeric_feature_raises_its_psi_above_the_alert_threshold() -> None:
    psi = _psi_of(_shifted(sample_rows(344)))
    assert psi["body_mass_g"] > alert_threshold()
    assert psi["bill_length_mm"] < 0.1  # untouched features stay quiet


def test_shifted_category_raises_psi() -> None:
    rows = [row | {"island": "Torgersen"} for row in sample_rows(344)]
    assert _psi_of(rows)["island"] > alert_threshold()


def test_unseen_categories_count_as_drift() -> None:
    profile = _profiles()["island"]
    values = np.array(["Atlantis"] * 50 + ["Biscoe"] * 50, dtype=object)
    psi = feature_psi(profile, values)
    assert psi is not None
    assert psi > alert_threshold()


def test_window_is_bounded() -> None:
    monitor = DriftMonitor(window_rows=100)
    columns = {"x": np.zeros(30)}
    for _ in range(20):
        monitor.record("m", Batch(columns, 30))
    assert 100 <= monitor.rows("m") <= 130


def test_each_model_has_its_own_window_so_a_split_does_not_reset_it() -> None:
    monitor = DriftMonitor(window_rows=1000)
    for _ in range(10):  # a 90/10 split, interleaved
        monitor.record("primary", Batch({"x": np.zeros(9)}, 9))
        monitor.record("canary", Batch({"x": np.ones(1)}, 1))
    assert (monitor.rows("primary"), monitor.rows("canary")) == (90, 10)
    monitor.retain(["primary"])
    assert (monitor.rows("primary"), monitor.rows("canary")) == (90, 0)


@pytest.mark.parametrize(("shift", "high"), [(False, False), (True, True)])
async def test_service_exports_drift_gauge(
    client: httpx.AsyncClient, shift: bool, high: bool
) -> None:
    labels = {"model_tag": "base", "feature": "body_mass_g"}
    INPUT_DRIFT_PSI.labels(**labels).set(-1)  # so only a fresh measurement counts
    rows = sample_rows(344)
    rows = _shifted(rows) if shift else rows
    for start in range(0, len(rows), 50):
        response = await client.post("/predict", json={"instances": rows[start : start + 50]})
        assert response.status_code == 200

    async def measured() -> float:
        # The drift loop of the app recomputes every 0.2 s (settings fixture).
        while True:
            value = REGISTRY.get_sample_value("ml_api_input_drift_psi", labels)
            if value is not None and value >= 0:
                return value
            await asyncio.sleep(0.05)

    value = await asyncio.wait_for(measured(), timeout=10)
    assert (value > alert_threshold()) is high


def test_all_numeric_window_gives_the_same_psi_as_columns() -> None:
    from app.registry.meta import FeatureSpec

    specs = [FeatureSpec(name=f"f{i}", dtype="float") for i in range(3)]
    rng = np.random.default_rng(1)
    train = rng.normal(size=(500, 3))
    import pandas as pd

    profiles = profile_training_data(pd.DataFrame(train, columns=["f0", "f1", "f2"]), specs)
    schema = InputSchema(specs, InputLimits(max_rows=10, max_string_length=10))
    shifted = rng.normal(loc=[0.0, 2.0, 0.0], size=(200, 3))
    by_matrix, by_columns = DriftMonitor(150), DriftMonitor(150)
    for row in shifted:
        batch = schema.rows_to_batch([{f"f{i}": float(v) for i, v in enumerate(row)}])
        assert batch.matrix is not None
        by_matrix.record("m", batch)
        by_columns.record("m", Batch(dict(batch.columns), 1))
    psi = by_matrix.compute(profiles, "m")
    assert psi == pytest.approx(by_columns.compute(profiles, "m"))
    assert psi["f1"] > alert_threshold() > psi["f0"]


async def test_measure_gives_computes_figures_one_feature_per_turn_of_the_loop() -> None:
    schema = InputSchema(features(), InputLimits(max_rows=10_000, max_string_length=256))
    monitor = DriftMonitor(window_rows=1000)
    monitor.record("m", schema.rows_to_batch(sample_rows(344)))
    profiles = _profiles()
    turns = 0

    async def count_turns() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    counter = asyncio.create_task(count_turns())
    await asyncio.sleep(0)
    before = turns
    measured = await monitor.measure(profiles, "m")
    turns_during = turns - before
    counter.cancel()
    assert measured == pytest.approx(monitor.compute(profiles, "m"))
    assert set(measured) == {f.name for f in features()}
    # Other tasks ran between the features: the loop was never held for all of them.
    assert turns_during >= len(profiles) - 1
