"""POST /predict: rows as JSON or a CSV upload in, one prediction per row out."""

from typing import Any

import orjson
from dependency_injector.wiring import inject
from fastapi import APIRouter, Request, Response
from starlette.datastructures import UploadFile

from app.api.deps import PredictionServiceDep
from app.errors import InvalidInput, UnsupportedMediaType
from app.schemas import EXAMPLE_ROW, ErrorResponse, PredictRequest, PredictResponse

router = APIRouter(tags=["inference"])

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "Body cannot be parsed (JSON or CSV syntax, encoding).",
        413: "Too many rows or too large a body.",
        415: "Neither JSON nor a multipart CSV upload.",
        422: "A row does not match the active model's schema.",
        503: "No model is active.",
    }.items()
}

OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": PredictRequest.model_json_schema(),
                "example": {"instances": [EXAMPLE_ROW]},
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "CSV with a header row naming the features.",
                        }
                    },
                }
            },
        },
    }
}


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=ERRORS,
    openapi_extra=OPENAPI_BODY,
    summary="Classify rows with the active model",
)
@inject
async def predict(request: Request, service: PredictionServiceDep) -> Response:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        result = await service.predict_json(await request.body())
    elif media_type == "multipart/form-data":
        result = await service.predict_csv(await _uploaded_csv(request))
    elif media_type in {"text/csv", "application/csv"}:
        result = await service.predict_csv(await request.body())
    else:
        raise UnsupportedMediaType(
            f"content type {media_type or 'missing'!r} is not supported: send application/json "
            "or a multipart/form-data upload with a CSV in the field 'file'",
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
