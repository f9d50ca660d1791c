"""Health (Open Inference Protocol paths) and Prometheus metrics."""

from dependency_injector.wiring import inject
from fastapi import APIRouter, Response

from app.api.deps import DeploymentDep
from app.metrics import render_latest
from app.schemas import HealthResponse

router = APIRouter(tags=["health"])


@router.get("/v2/health/live", response_model=HealthResponse, summary="The process is up")
async def live() -> HealthResponse:
    return HealthResponse(status="live")


@router.get(
    "/v2/health/ready",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "No model loaded yet."}},
    summary="Every model of the deployment is loaded and serving",
)
@inject
async def ready(deployment: DeploymentDep, response: Response) -> HealthResponse:
    plan = deployment.current()
    if plan is None:
        response.status_code = 503
        return HealthResponse(status="not_ready")
    return HealthResponse(
        status="ready",
        model_tag=plan.spec.primary,
        revision=plan.record.revision,
        serving_since=plan.since,
    )


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    payload, content_type = render_latest()
    return Response(payload, media_type=content_type)
