"""The plain ASGI helpers of the direct OIP infer path: the body in chunks, a client that
leaves, the first of repeated headers, a JSON answer with its length."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from starlette.requests import ClientDisconnect
from starlette.types import Message

from app.api.asgi import headers_of, read_body, send_json


def _receiver(*messages: Message) -> Any:
    queue = list(messages)

    async def receive() -> Message:
        return queue.pop(0)

    return receive


async def test_a_body_in_chunks_is_read_whole() -> None:
    receive = _receiver(
        {"type": "http.request", "body": b'{"in', "more_body": True},
        {"type": "http.request", "body": b"", "more_body": True},
        {"type": "http.request", "body": b'puts": []}', "more_body": False},
    )
    assert await read_body(receive) == b'{"inputs": []}'


async def test_a_body_without_a_body_key_is_empty() -> None:
    assert await read_body(_receiver({"type": "http.request"})) == b""


async def test_a_client_that_leaves_before_the_end_of_its_body_is_a_disconnect() -> None:
    receive = _receiver(
        {"type": "http.request", "body": b"{", "more_body": True},
        {"type": "http.disconnect"},
    )
    with pytest.raises(ClientDisconnect):
        await read_body(receive)


def test_headers_are_the_first_value_of_each_name_or_none() -> None:
    scope = {
        "headers": [
            (b"x-ml-api-key", b"user-1"),
            (b"x-request-id", b"r-1"),
            (b"x-ml-api-key", b"user-2"),
            (b"content-type", b"application/json"),
        ]
    }
    assert headers_of(scope, b"x-request-id", b"x-ml-api-key", b"authorization") == [
        "r-1",
        "user-1",
        None,
    ]


async def test_a_json_answer_carries_its_type_length_status_and_extra_headers() -> None:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    body = orjson.dumps({"error": "é"})
    await send_json(send, body, 400, [(b"www-authenticate", b"Bearer")])
    start, answer = sent
    assert start["status"] == 400
    assert start["headers"] == [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", b"Bearer"),
    ]
    assert answer == {"type": "http.response.body", "body": body}
