from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from app.metrics import CONFIDENCE_BUCKETS, observe_many


def _samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("le", "")): s.value
        for metric in registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


@pytest.mark.parametrize("size", [3, 16, 500])
def test_bulk_observe_equals_one_by_one(size: int) -> None:
    values = np.random.default_rng(size).uniform(0.2, 1.0, size=size)
    values[:2] = [0.5, 1.0]  # values on a bucket bound go to that bucket
    one, bulk = CollectorRegistry(), CollectorRegistry()
    by_one = Histogram("c", "c", buckets=CONFIDENCE_BUCKETS, registry=one)
    by_bulk = Histogram("c", "c", buckets=CONFIDENCE_BUCKETS, registry=bulk)
    for value in values.tolist():
        by_one.observe(value)
    observe_many(by_bulk, values)
    expected, got = _samples(one), _samples(bulk)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key
