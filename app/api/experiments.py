"""GET /get_experiment_metas: published experiments, newest first, with their roles."""

from typing import Annotated

import anyio.to_thread
from dependency_injector.wiring import inject
from fastapi import APIRouter, Query, Response

from app.api.deps import DeploymentDep, RegistryDep
from app.registry.meta import ExperimentSummary
from app.schemas import ErrorResponse, ExperimentOut
from app.serving.deployment import ServingPlan

router = APIRouter(tags=["experiments"])


def _describe(summary: ExperimentSummary, plan: ServingPlan | None) -> ExperimentOut:
    role = plan.spec.role_of(summary.tag) if plan is not None else None
    share: float | None = None
    if plan is not None and role == "shadow":
        share = next(s.percent for s in plan.spec.shadows if s.tag == summary.tag)
    elif plan is not None and role is not None:
        share = plan.router.weights.get(summary.tag)
    return ExperimentOut(
        **summary.model_dump(),
        active=role == "primary",
        role=role,
        traffic_percent=share,
    )


@router.get(
    "/get_experiment_metas",
    response_model=list[ExperimentOut],
    responses={
        200: {
            "headers": {
                "X-Total-Count": {
                    "description": "Experiments matching the filters",
                    "schema": {"type": "integer"},
                }
            }
        },
        503: {"model": ErrorResponse, "description": "Registry unreachable."},
    },
    summary="List published experiments, newest first, with their role and traffic share",
    description="Metadata is read once per experiment (experiments are immutable) and the "
    "folder listing reused for 2 s, so the call stays fast on registries of thousands. "
    "`X-Total-Count` tells how many match the filters.",
)
@inject
async def get_experiment_metas(
    registry: RegistryDep,
    deployment: DeploymentDep,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=1000, description="Most experiments to return.")] = 100,
    offset: Annotated[int, Query(ge=0, description="Experiments to skip (newest first).")] = 0,
    model_type: Annotated[
        str | None, Query(max_length=64, description="Only this model type (e.g. hgb).")
    ] = None,
) -> list[ExperimentOut]:
    page = await anyio.to_thread.run_sync(
        lambda: registry.list_experiments(model_type=model_type, limit=limit, offset=offset)
    )
    response.headers["X-Total-Count"] = str(page.total)
    plan = deployment.current()
    return [_describe(summary, plan) for summary in page.experiments]
