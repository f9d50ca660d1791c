"""What goes out for a message taken in: its answer, or its refusal for the error topic.

An answer keeps the request's key (the request id, so it lands on the output partition of
its key and a caller can match it) and the request's headers, and adds where it came from and
the model that answered; its value is our ``/predict`` JSON answer. A refusal carries the
original key, headers and value untouched, plus the reason in headers, so it can be replayed
once fixed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import orjson

from app.errors import InvalidHeader
from app.serving.prediction import Prediction

# Headers the consumer writes (those of the request are kept, minus these).
MODEL_TAG = "ml-api-model-tag"
SOURCE_TOPIC = "ml-api-source-topic"
SOURCE_PARTITION = "ml-api-source-partition"
SOURCE_OFFSET = "ml-api-source-offset"
ERROR_REASON = "ml-api-error-reason"
ERROR_CODE = "ml-api-error-code"
ERROR_MESSAGE = "ml-api-error-message"
WRITTEN = frozenset(
    {MODEL_TAG, SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET, ERROR_REASON, ERROR_CODE}
    | {ERROR_MESSAGE}
)
# Read from the request: the sticky routing key of a traffic split (HTTP: X-ML-API-Key).
ROUTING_KEY = "ml-api-key"

# The rule of HTTP's X-Request-ID: a key that follows it is the request id.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
MAX_ROUTING_KEY = 256
MAX_ERROR_MESSAGE = 1000

Headers = Sequence[tuple[str, bytes]]


class Record(Protocol):
    """The parts of a consumed message the consumer reads (aiokafka's ConsumerRecord)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Headers: ...


@dataclass(frozen=True)
class Outgoing:
    """A message to produce; ``reason`` is set for refusals (the error topic), ``fallback``
    makes what to send instead if this one is too large for the producer or the broker."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    reason: str | None = None
    fallback: Callable[[], Outgoing] | None = None


def request_id_of(record: Record) -> str:
    """The message key when it reads as a request id, else one made of where the message is
    (the same on every redelivery)."""
    if record.key is not None:
        try:
            key = record.key.decode("ascii")
        except UnicodeDecodeError:
            key = ""
        if REQUEST_ID.fullmatch(key):
            return key
    return f"{record.topic}-{record.partition}-{record.offset}"


def routing_key_of(record: Record) -> str | None:
    for name, value in record.headers:
        if name.lower() == ROUTING_KEY:
            try:
                key = value.decode("utf-8")
            except UnicodeDecodeError:
                key = ""
            if not 0 < len(key) <= MAX_ROUTING_KEY:
                raise InvalidHeader(
                    f"header {ROUTING_KEY} must be 1-{MAX_ROUTING_KEY} characters of UTF-8",
                    reason="invalid_key",
                )
            return key
    return None


def _provenance(record: Record) -> list[tuple[str, bytes]]:
    kept = [(name, value) for name, value in record.headers if name.lower() not in WRITTEN]
    return [
        *kept,
        (SOURCE_TOPIC, record.topic.encode()),
        (SOURCE_PARTITION, str(record.partition).encode()),
        (SOURCE_OFFSET, str(record.offset).encode()),
    ]


def answer(record: Record, topic: str, prediction: Prediction, error_topic: str) -> Outgoing:
    headers = [*_provenance(record), (MODEL_TAG, prediction.model_tag.encode())]

    def too_large() -> Outgoing:
        return refusal(
            record,
            error_topic,
            reason="answer_too_large",
            code="payload_too_large",
            message="the answer is larger than the producer or the broker accepts "
            "(max.request.size, message.max.bytes): send fewer rows per message",
        )

    body = orjson.dumps(prediction.body())
    return Outgoing(topic, record.key, body, headers, fallback=too_large)


def refusal(record: Record, topic: str, *, reason: str, code: str, message: str) -> Outgoing:
    headers = [
        *_provenance(record),
        (ERROR_REASON, reason.encode()),
        (ERROR_CODE, code.encode()),
        (ERROR_MESSAGE, message[:MAX_ERROR_MESSAGE].encode("utf-8", "replace")),
    ]
    return Outgoing(topic, record.key, record.value, headers, reason=reason)
