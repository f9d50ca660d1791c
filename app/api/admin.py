"""POST /replace_ml_model: hot-swap the active model by experiment tag."""

from typing import Annotated

from dependency_injector.wiring import inject
from fastapi import APIRouter, Header

from app.api.deps import AdminTokensDep, ModelHolderDep
from app.schemas import ErrorResponse, ReplaceRequest, ReplaceResponse

router = APIRouter(tags=["management"])


@router.post(
    "/replace_ml_model",
    response_model=ReplaceResponse,
    responses={
        400: {"model": ErrorResponse, "description": "Body is not valid JSON."},
        401: {"model": ErrorResponse, "description": "Missing or wrong bearer token."},
        403: {"model": ErrorResponse, "description": "No admin token is configured."},
        404: {"model": ErrorResponse, "description": "No experiment with that tag."},
        413: {"model": ErrorResponse, "description": "Body larger than ML_API_MAX_UPLOAD_BYTES."},
        422: {"model": ErrorResponse, "description": "Invalid tag, or the model failed a check."},
        503: {"model": ErrorResponse, "description": "Registry unreachable."},
    },
    summary="Load, verify and activate the model of an experiment, without downtime",
)
@inject
async def replace_ml_model(
    body: ReplaceRequest,
    holder: ModelHolderDep,
    tokens: AdminTokensDep,
    authorization: Annotated[str | None, Header()] = None,
) -> ReplaceResponse:
    tokens.check(authorization)
    outcome = await holder.replace(body.tag, requested_by="api")
    return ReplaceResponse(
        previous_tag=outcome.previous_tag,
        active_tag=outcome.active_tag,
        load_ms=round(outcome.load_ms, 1),
    )
