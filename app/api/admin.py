"""POST /replace_ml_model: hot-swap the primary model by experiment tag."""

from typing import Annotated

from dependency_injector.wiring import inject
from fastapi import APIRouter, Header

from app.api.deps import AdminTokensDep, DeploymentDep
from app.registry.meta import validate_tag
from app.schemas import MANAGEMENT_ERRORS, ReplaceRequest, ReplaceResponse

router = APIRouter(tags=["management"])


@router.post(
    "/replace_ml_model",
    response_model=ReplaceResponse,
    responses=MANAGEMENT_ERRORS,
    summary="Make an experiment the primary with all traffic, without downtime",
    description="Loads and verifies the experiment's model while the current one keeps "
    "serving, then makes it the primary with all traffic (candidates and shadows cleared).",
)
@inject
async def replace_ml_model(
    body: ReplaceRequest,
    deployment: DeploymentDep,
    tokens: AdminTokensDep,
    authorization: Annotated[str | None, Header()] = None,
) -> ReplaceResponse:
    tokens.check(authorization)
    outcome = await deployment.replace_primary(validate_tag(body.tag), by="api")
    return ReplaceResponse(
        previous_tag=outcome.previous.primary if outcome.previous else None,
        active_tag=outcome.record.spec.primary,
        load_ms=round(outcome.load_ms, 1),
    )
