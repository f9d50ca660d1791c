"""The deployment spec format: what is refused, with a message naming the problem."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from app.registry.spec import DeploymentRecord, SpecBody

NOW = datetime(2026, 11, 29, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"primary": "../x"}, "invalid experiment tag"),
        (
            {"primary": "a", "candidates": [{"tag": "b", "weight": 101}]},
            "less than or equal to 100",
        ),
        (
            {"primary": "a", "candidates": [{"tag": "b", "weight": -1}]},
            "greater than or equal to 0",
        ),
        (
            {
                "primary": "a",
                "candidates": [{"tag": "b", "weight": 60}, {"tag": "c", "weight": 50}],
            },
            "add up to 110",
        ),
        ({"primary": "a", "candidates": [{"tag": "a", "weight": 5}]}, "appears twice"),
        (
            {
                "primary": "a",
                "candidates": [{"tag": "b", "weight": 5}],
                "shadows": [{"tag": "b", "percent": 5}],
            },
            "as candidate and as shadow",
        ),
        ({"primary": "a", "shadows": [{"tag": "b", "percent": 0}]}, "greater than 0"),
        ({"primary": "a", "candidates": [{"tag": "b", "wieght": 5}]}, "wieght"),
        ({"primary": "a", "guard": {"min_requests": 1}}, "min_requests"),
        ({"primary": "a", "bandit": {"kind": "thompson"}}, "at least one candidate"),
        ({"primary": "a", "colour": "red"}, "colour"),
    ],
)
def test_bad_specs_are_refused_naming_the_problem(body: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        SpecBody.model_validate(body)


def test_shares_give_the_primary_the_rest() -> None:
    spec = SpecBody.model_validate(
        {"primary": "a", "candidates": [{"tag": "b", "weight": 10}, {"tag": "c", "weight": 5}]}
    )
    assert spec.traffic_shares() == {"a": 85.0, "b": 10.0, "c": 5.0}
    assert spec.tags == ["a", "b", "c"]
    assert [spec.role_of(t) for t in ("a", "b", "x")] == ["primary", "candidate", None]


def test_history_is_bounded_and_keeps_the_previous_spec() -> None:
    record = DeploymentRecord.first(SpecBody(primary="a"), at=NOW, by="x", action="put")
    for i in range(60):
        record = record.successor(SpecBody(primary=f"t{i}"), at=NOW, by="x", action="put")
    assert record.revision == 61
    assert record.previous == SpecBody(primary="t58")
    assert len(record.history) == 50
    assert record.history[-1].primary == "t59"
