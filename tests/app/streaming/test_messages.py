"""Answers and refusals: keys kept, request headers kept, provenance and reasons added."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from app.errors import InvalidHeader
from app.streaming.messages import (
    ERROR_CODE,
    ERROR_MESSAGE,
    ERROR_REASON,
    ROUTING_KEY,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TOPIC,
    refusal,
    request_id_of,
    routing_key_of,
)


@dataclass(frozen=True)
class Message:
    key: bytes | None = b"order-1"
    value: bytes | None = b"{}"
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    topic: str = "requests"
    partition: int = 2
    offset: int = 41


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (b"order-1001", "order-1001"),
        (b"a:b.c_d-e", "a:b.c_d-e"),
        (None, "requests-2-41"),
        (b"has space", "requests-2-41"),
        (b"\xff\x00", "requests-2-41"),
        (b"x" * 129, "requests-2-41"),
    ],
)
def test_the_key_is_the_request_id_when_it_reads_as_one(key: bytes | None, expected: str) -> None:
    assert request_id_of(Message(key=key)) == expected


def test_routing_key_comes_from_its_header_and_is_checked() -> None:
    assert routing_key_of(Message()) is None
    assert routing_key_of(Message(headers=[(ROUTING_KEY, b"user-42")])) == "user-42"
    for bad in (b"", b"k" * 257, b"\xff"):
        with pytest.raises(InvalidHeader):
            routing_key_of(Message(headers=[(ROUTING_KEY, bad)]))


def test_a_refusal_keeps_the_request_and_says_why() -> None:
    message = Message(headers=[("trace", b"t-1"), (ERROR_REASON, b"forged")])
    out = refusal(message, "errors", reason="wrong_type", code="invalid_input", message="x" * 5000)
    headers = dict(out.headers)
    assert (out.topic, out.key, out.value, out.reason) == (
        "errors",
        b"order-1",
        b"{}",
        "wrong_type",
    )
    assert headers["trace"] == b"t-1"
    assert headers[ERROR_REASON] == b"wrong_type"  # ours, not the request's
    assert [name for name, _ in out.headers].count(ERROR_REASON) == 1
    assert headers[ERROR_CODE] == b"invalid_input"
    assert len(headers[ERROR_MESSAGE]) == 1000
    assert (headers[SOURCE_TOPIC], headers[SOURCE_PARTITION], headers[SOURCE_OFFSET]) == (
        b"requests",
        b"2",
        b"41",
    )
