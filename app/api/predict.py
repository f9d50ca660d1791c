"""POST /predict: rows as JSON or a CSV upload in, one prediction per row out.

This is the hot path, so it is a plain Starlette route: FastAPI's dependency resolution would
run each container provider in a thread pool, which costs more than the model call. The
service still comes from the container (``app.state.container``), so provider overrides in
tests apply; the OpenAPI operation is declared by :func:`document`.
"""

from typing import Any

import orjson
from pydantic.json_schema import models_json_schema
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.codecs.csv_file import decode_csv
from app.codecs.decoded import Decoded
from app.codecs.json_rows import decode_json_rows
from app.errors import InvalidHeader, InvalidInput, UnsupportedMediaType
from app.feedback.ids import REQUEST_ID
from app.schemas import EXAMPLE_ROW, ErrorResponse, PredictRequest, PredictResponse
from app.serving.prediction import PredictionService

PATH = "/predict"
CSV_TYPES = frozenset({"text/csv", "application/csv"})
REQUEST_ID_HEADER = "x-request-id"
KEY_HEADER = "x-ml-api-key"
MAX_KEY_LENGTH = 256


def request_id_of(request: Request) -> str | None:
    """The caller's X-Request-ID when it is a sane token; None when there is none (the
    prediction gets one of ours)."""
    return checked_request_id(request.headers.get(REQUEST_ID_HEADER))


def routing_key_of(request: Request) -> str | None:
    """X-ML-API-Key: requests with the same key are served by the same arm."""
    return checked_key(request.headers.get(KEY_HEADER))


def checked_request_id(given: str | None) -> str | None:
    if given is not None and not REQUEST_ID.fullmatch(given):
        raise InvalidHeader(
            "header X-Request-ID must be 1-128 characters of letters, digits and . _ : -",
            reason="invalid_request_id",
        )
    return given


def checked_key(key: str | None) -> str | None:
    if key is not None and not 0 < len(key) <= MAX_KEY_LENGTH:
        raise InvalidHeader(
            f"header X-ML-API-Key must be 1-{MAX_KEY_LENGTH} characters", reason="invalid_key"
        )
    return key


async def predict(request: Request) -> Response:
    service: PredictionService = request.app.state.container.prediction_service()
    request_id = request_id_of(request)
    key = routing_key_of(request)
    decoded = await _decode(request)
    prediction = await service.predict(decoded, request_id=request_id, key=key)
    return Response(
        orjson.dumps(prediction.body()),
        media_type="application/json",
        headers={"X-Request-ID": prediction.request_id},
    )


async def _decode(request: Request) -> Decoded:
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        return decode_json_rows(await request.body())
    if media_type == "multipart/form-data":
        return decode_csv(await _uploaded_csv(request))
    if media_type in CSV_TYPES:
        return decode_csv(await request.body())
    raise UnsupportedMediaType(
        f"content type {content_type[:60] or 'missing'!r} is not supported: send "
        "application/json, text/csv, or a multipart/form-data upload with a CSV in the "
        "field 'file'",
        reason="unsupported_media_type",
    )


async def _uploaded_csv(request: Request) -> bytes:
    async with request.form(max_files=1, max_fields=10) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidInput(
                "multipart body must carry the CSV as a file in the field 'file'",
                reason="missing_file",
            )
        return await upload.read()


route = Route(PATH, predict, methods=["POST"], name="predict")


ERRORS = {
    400: "Body cannot be parsed (JSON or CSV syntax, encoding), or a bad X-Request-ID or "
    "X-ML-API-Key header.",
    413: "Too many rows or too large a body.",
    415: "Neither JSON, CSV nor a multipart CSV upload.",
    422: "A row does not match the active model's schema.",
    503: "No model is active.",
}


def document(openapi: dict[str, Any]) -> None:
    """Add the /predict operation and its schemas to a generated OpenAPI document."""
    _, definitions = models_json_schema(
        [
            (PredictRequest, "validation"),
            (PredictResponse, "serialization"),
            (ErrorResponse, "serialization"),
        ],
        ref_template="#/components/schemas/{model}",
    )
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(definitions.get("$defs", {}))

    def ref(name: str) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{name}"}

    responses: dict[str, Any] = {
        "200": {
            "description": "One prediction per row, in input order.",
            "headers": {
                "X-Request-ID": {
                    "description": "The request id, as in the body.",
                    "schema": {"type": "string"},
                }
            },
            "content": {"application/json": {"schema": ref("PredictResponse")}},
        }
    }
    for status, text in ERRORS.items():
        responses[str(status)] = {
            "description": text,
            "content": {"application/json": {"schema": ref("ErrorResponse")}},
        }
    csv_file = {
        "type": "string",
        "format": "binary",
        "description": "CSV with a header row naming the features.",
    }
    openapi.setdefault("paths", {})[PATH] = {
        "post": {
            "tags": ["inference"],
            "summary": "Classify rows with the deployment's model (routed by X-ML-API-Key)",
            "operationId": "predict",
            "parameters": [
                {
                    "name": "X-Request-ID",
                    "in": "header",
                    "required": False,
                    "description": "Echoed in the answer; one is made up when absent.",
                    "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
                },
                {
                    "name": "X-ML-API-Key",
                    "in": "header",
                    "required": False,
                    "description": "Sticky routing key (e.g. a user id): the same key is "
                    "served by the same arm of a traffic split.",
                    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
                },
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": ref("PredictRequest"),
                        "example": {"instances": [EXAMPLE_ROW]},
                    },
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file"],
                            "properties": {"file": csv_file},
                        }
                    },
                    "text/csv": {"schema": {"type": "string"}},
                },
            },
            "responses": responses,
        }
    }
