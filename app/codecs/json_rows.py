"""Our JSON body: ``{"instances": [{feature: value, ...}, ...]}``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from app.errors import InvalidInput, MalformedRequest
from app.serving.inputs import Batch, InputSchema


@dataclass(frozen=True)
class JsonRows:
    instances: list[Any]

    def ignored(self, schema: InputSchema) -> list[str]:
        return []  # an unknown key in a JSON row is an error, named by the schema

    def to_batch(self, schema: InputSchema) -> Batch:
        return schema.rows_to_batch(self.instances)


def parse_json(body: bytes) -> Any:
    """A JSON request body, or MalformedRequest naming the syntax error (every JSON route)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest(f"body is not valid JSON: {exc}", reason="malformed_json") from exc


def decode_json_rows(body: bytes) -> JsonRows:
    return rows_from_document(parse_json(body))


def rows_from_document(document: Any) -> JsonRows:
    """The rows of an already parsed body (the stream consumer parses its messages itself)."""
    if not isinstance(document, dict) or "instances" not in document:
        raise InvalidInput(
            'body must be a JSON object with an "instances" list of rows', reason="malformed_body"
        )
    extra = sorted(set(document) - {"instances"})
    if extra:
        raise InvalidInput(f"unknown top-level field(s): {', '.join(extra)}", "malformed_body")
    instances = document["instances"]
    if not isinstance(instances, list):
        raise InvalidInput('"instances" must be a list of rows', reason="malformed_body")
    return JsonRows(instances)
