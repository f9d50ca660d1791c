"""Request ids: ours are signed, so feedback can tell forged and expired ones at once."""

from __future__ import annotations

import pytest

from app.feedback.ids import RequestIds

IDS = RequestIds(b"a secret shared by every worker")


def test_our_ids_verify_and_carry_their_time() -> None:
    issued = IDS.issue(now=1_700_000_000.5)
    check = IDS.check(issued)
    assert check.kind == "ours"
    assert check.issued_at == pytest.approx(1_700_000_000.5, abs=0.001)
    assert len({IDS.issue() for _ in range(1000)}) == 1000


def test_another_services_key_does_not_verify() -> None:
    other = RequestIds(b"another deployment's secret")
    assert other.check(IDS.issue()).kind == "forged"


@pytest.mark.parametrize("part", [0, 1, 2], ids=["time", "nonce", "signature"])
def test_any_changed_part_is_a_forgery(part: int) -> None:
    parts = IDS.issue().split(".")
    parts[part] = parts[part][:-1] + ("1" if parts[part][-1] != "1" else "2")
    assert IDS.check(".".join(parts)).kind == "forged"


@pytest.mark.parametrize("value", ["", "x" * 129, "has space", "é", 42, None])
def test_malformed(value: object) -> None:
    assert IDS.check(value).kind == "malformed"


def test_a_callers_own_id_is_only_looked_up() -> None:
    assert IDS.check("order-1001").kind == "caller"


def test_without_feedback_ids_are_plain_and_never_forged() -> None:
    plain = RequestIds(None)
    issued = plain.issue()
    assert len(issued) == 32
    assert plain.check(IDS.issue()).kind == "caller"
