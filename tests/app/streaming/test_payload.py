"""Message values to decoded requests: our JSON rows, OIP v2, and every refusal's reason."""

from __future__ import annotations

import orjson
import pytest

from app.codecs.json_rows import JsonRows
from app.errors import InvalidInput, MalformedRequest, PayloadTooLarge
from app.serving.inputs import InputLimits, InputSchema
from app.streaming.payload import PayloadDecoder
from tests.models import features, sample_rows


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
        (b'{"inputs": []}', InvalidInput, "malformed_body"),
        (b"[" + b"1," * 600 + b"1]", PayloadTooLarge, "too_large"),
    ],
)
def test_refusals_carry_their_reason(
    value: bytes | None, error: type[InvalidInput], reason: str
) -> None:
    with pytest.raises(error) as raised:
        PayloadDecoder(1000).decode(value)
    assert raised.value.reason == reason


def test_an_oip_message_decodes_to_the_same_rows_as_our_json() -> None:
    row = sample_rows(1, offset=7)[0]
    inputs = [
        {
            "name": name,
            "shape": [1],
            "datatype": "BYTES" if name in {"island", "sex"} else "FP64",
            "data": [value],
        }
        for name, value in row.items()
    ]
    oip = {"parameters": {"content_type": "pd"}, "inputs": inputs}
    schema = InputSchema(features(), InputLimits(max_rows=10, max_string_length=64))
    from_oip = PayloadDecoder(10_000).decode(orjson.dumps(oip)).to_batch(schema)
    from_rows = PayloadDecoder(10_000).decode(orjson.dumps({"instances": [row]})).to_batch(schema)
    for name in schema.names:
        assert from_oip.columns[name].tolist() == from_rows.columns[name].tolist()
