"""A message value -> a decoded request: our /predict JSON, or OIP v2 JSON.

The body's top-level key tells the format: ``{"instances": [...]}`` is ours
(:func:`app.codecs.json_rows.rows_from_document`), ``{"inputs": [...]}`` an Open Inference
Protocol v2 InferenceRequest (:func:`app.codecs.oip.decode_inference_request`: the pandas codec
or one 2-D tensor). Formats are a mapping from that key to a decoder of the parsed document.
The answer is our /predict JSON either way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from app.codecs.decoded import Decoded
from app.codecs.json_rows import rows_from_document
from app.codecs.oip import decode_inference_request
from app.errors import InvalidInput, MalformedRequest, PayloadTooLarge

DocumentDecoder = Callable[[dict[str, Any]], Decoded]


def oip_request(document: dict[str, Any]) -> Decoded:
    return decode_inference_request(document).decoded


#: Top-level key -> decoder, tried in this order.
FORMATS: Mapping[str, DocumentDecoder] = {"instances": rows_from_document, "inputs": oip_request}


class PayloadDecoder:
    def __init__(self, max_bytes: int, formats: Mapping[str, DocumentDecoder] = FORMATS) -> None:
        self.max_bytes = max_bytes
        self.formats = dict(formats)

    def decode(self, value: bytes | None) -> Decoded:
        """The request a message carries; raises InvalidInput (with its reason) otherwise."""
        if not value:
            raise MalformedRequest("message has no value: send a JSON body", reason="empty_message")
        if len(value) > self.max_bytes:
            raise PayloadTooLarge(
                f"message value is {len(value)} bytes, more than the limit of {self.max_bytes} "
                "(ML_API_MAX_UPLOAD_BYTES)",
                reason="too_large",
            )
        try:
            document = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise MalformedRequest(
                f"message value is not valid JSON: {exc}", reason="malformed_json"
            ) from exc
        if isinstance(document, dict):
            for key, decode in self.formats.items():
                if key in document:
                    return decode(document)
        expected = " or ".join(f'"{key}"' for key in self.formats)
        raise InvalidInput(
            f"message value must be a JSON object with {expected}, e.g. "
            '{"instances": [{feature: value, ...}]}',
            reason="malformed_body",
        )
