"""Message values to decoded requests: our JSON rows, OIP pending, and every refusal's reason."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from app.codecs.decoded import Decoded
from app.codecs.json_rows import JsonRows, rows_from_document
from app.errors import InvalidInput, MalformedRequest, PayloadTooLarge
from app.streaming.payload import PayloadDecoder


def test_our_json_rows_are_decoded() -> None:
    decoded = PayloadDecoder(1000).decode(b'{"instances": [{"a": 1}]}')
    assert isinstance(decoded, JsonRows)
    assert decoded.instances == [{"a": 1}]


@pytest.mark.parametrize(
    ("value", "error", "reason"),
    [
        (None, MalformedRequest, "empty_message"),
        (b"", MalformedRequest, "empty_message"),
        (b"\xff\xfe", MalformedRequest, "malformed_json"),
        (b"{", MalformedRequest, "malformed_json"),
        (b'"instances"', InvalidInput, "malformed_body"),
        (b'{"rows": []}', InvalidInput, "malformed_body"),
        (b'{"instances": {}}', InvalidInput, "malformed_body"),
        (b'{"inputs": []}', InvalidInput, "unsupported_payload"),
        (b"[" + b"1," * 600 + b"1]", PayloadTooLarge, "too_large"),
    ],
)
def test_refusals_carry_their_reason(
    value: bytes | None, error: type[InvalidInput], reason: str
) -> None:
    with pytest.raises(error) as raised:
        PayloadDecoder(1000).decode(value)
    assert raised.value.reason == reason


def test_an_oip_decoder_plugs_in_by_its_top_level_key() -> None:
    seen: list[dict[str, Any]] = []

    def oip(document: dict[str, Any]) -> Decoded:
        seen.append(document)
        return JsonRows([{"from": "oip"}])

    decoder = PayloadDecoder(1000, formats={"instances": rows_from_document, "inputs": oip})
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]}]}
    decoded = decoder.decode(orjson.dumps(body))
    assert isinstance(decoded, JsonRows)
    assert decoded.instances == [{"from": "oip"}]
    assert seen == [body]
