"""Request ids: ours are signed, so feedback can tell forged and expired ones at once."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from app.feedback.ids import RequestIds
from app.feedback.store import PredictionRecord

SECRET = b"a secret shared by every worker"
IDS = RequestIds(SECRET)


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


def test_ids_issued_by_the_previous_version_still_verify() -> None:
    """Ids signed with HMAC-SHA256 (before 2026-11-29) stay valid for their retention."""
    key = hmac.new(SECRET, b"ml-api request ids", "sha256").digest()
    body = f"{IDS.issue(now=1_700_000_000.5).rsplit('.', 1)[0]}"
    earlier = f"{body}.{hmac.new(key, body.encode(), hashlib.sha256).hexdigest()[:16]}"
    assert earlier != IDS.issue(now=1_700_000_000.5)
    check = IDS.check(earlier)
    assert check.kind == "ours"
    assert check.issued_at == pytest.approx(1_700_000_000.5, abs=0.001)
    assert RequestIds(b"another deployment's secret").check(earlier).kind == "forged"


def test_ids_issued_in_the_same_millisecond_differ_and_carry_it() -> None:
    first, second = IDS.issue(now=1_700_000_000.25), IDS.issue(now=1_700_000_000.25)
    later = IDS.issue(now=1_700_000_001.75)
    assert first != second
    assert first.split(".")[0] == second.split(".")[0] != later.split(".")[0]
    assert IDS.check(later).issued_at == pytest.approx(1_700_000_001.75, abs=0.001)


def test_a_sealed_id_carries_the_prediction() -> None:
    sealed = IDS.seal("6447ade-pf7c624b3", "candidate", 12, ["Adelie", "Gentoo"], now=1.7e9)
    assert sealed is not None
    assert len(sealed) <= 128
    check = IDS.check(sealed)
    assert check.kind == "ours"
    assert check.issued_at == pytest.approx(1.7e9, abs=0.001)
    assert check.record == PredictionRecord(
        sealed, "6447ade-pf7c624b3", "candidate", 12, ["Adelie", "Gentoo"], 1.7e9
    )
    assert IDS.check(IDS.issue()).record is None  # plain ids are looked up in the store
    assert RequestIds(b"another deployment's secret").check(sealed).kind == "forged"


@pytest.mark.parametrize("part", [0, 1, 2, 3], ids=["time", "nonce", "prediction", "signature"])
def test_any_changed_part_of_a_sealed_id_is_a_forgery(part: int) -> None:
    parts = IDS.seal("base", "primary", 3, ["Adelie"]).split(".")  # type: ignore[union-attr]
    if part == 2:  # another prediction, well encoded: the most tempting change
        other = IDS.seal("base", "primary", 3, ["Gentoo"])
        assert other is not None
        parts[2] = other.split(".")[2]
    else:
        parts[part] = parts[part][:-1] + ("1" if parts[part][-1] != "1" else "2")
    assert IDS.check(".".join(parts)).kind == "forged"


def test_a_plain_signature_never_passes_for_a_sealed_id() -> None:
    sealed = IDS.seal("base", "primary", 3, ["Adelie"])
    assert sealed is not None
    body = sealed.rsplit(".", 1)[0]
    resigned = f"{body}.{IDS._sign(body)}"
    assert IDS.check(resigned).kind == "forged"


@pytest.mark.parametrize(
    ("tag", "role", "labels"),
    [
        ("t" * 90, "primary", ["Adelie"]),  # too long a tag
        ("base", "primary", ["Adelie"] * 30),  # too many rows
        ("base", "shadow", ["Adelie"]),  # shadows answer no request
    ],
    ids=["long-tag", "many-rows", "shadow"],
)
def test_what_does_not_fit_is_not_sealed(tag: str, role: str, labels: list[str]) -> None:
    assert IDS.seal(tag, role, 1, labels) is None


def test_every_sealed_id_is_a_valid_request_id_of_ours() -> None:
    for length in range(1, 80, 3):
        for rows in (1, 2, 5, 9):
            labels = [f"class é{i}" for i in range(rows)]
            sealed = IDS.seal("x" * length, "primary", 10**6, labels)
            if sealed is None:
                continue
            assert len(sealed) <= 128
            record = IDS.check(sealed).record
            assert record is not None
            assert (record.tag, record.labels) == ("x" * length, labels)
    assert RequestIds(None).seal("base", "primary", 1, ["Adelie"]) is None
