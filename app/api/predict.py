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

from app.errors import InvalidInput, UnsupportedMediaType
from app.schemas import EXAMPLE_ROW, ErrorResponse, PredictRequest, PredictResponse
from app.serving.prediction import PredictionService

PATH = "/predict"
CSV_TYPES = frozenset({"text/csv", "application/csv"})


async def predict(request: Request) -> Response:
    service: PredictionService = request.app.state.container.prediction_service()
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        result = await service.predict_json(await request.body())
    elif media_type == "multipart/form-data":
        result = await service.predict_csv(await _uploaded_csv(request))
    elif media_type in CSV_TYPES:
        result = await service.predict_csv(await request.body())
    else:
        raise UnsupportedMediaType(
            f"content type {content_type[:60] or 'missing'!r} is not supported: send "
            "application/json, text/csv, or a multipart/form-data upload with a CSV in the "
            "field 'file'",
            reason="unsupported_media_type",
        )
    return Response(orjson.dumps(result), media_type="application/json")


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
    400: "Body cannot be parsed (JSON or CSV syntax, encoding).",
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
            "summary": "Classify rows with the active model",
            "operationId": "predict",
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
