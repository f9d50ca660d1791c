"""The deployment spec: read it with live figures, replace it, promote, roll back."""

from typing import Annotated, Any

import anyio.to_thread
from dependency_injector.wiring import inject
from fastapi import APIRouter, Header

from app.api.deps import AdminTokensDep, DeploymentDep, FeedbackStoreDep, RecorderDep
from app.errors import FeedbackDisabled
from app.feedback.report import experiment_report
from app.registry.meta import validate_tag
from app.registry.spec import SpecBody
from app.schemas import MANAGEMENT_ERRORS, DeploymentOut, PromoteRequest
from app.serving.deployment import ChangeOutcome, Deployment
from app.serving.figures import deployment_figures

router = APIRouter(tags=["management"])

Authorization = Annotated[str | None, Header()]

SPEC_EXAMPLE = {
    "primary": "a1b2c3d",
    "candidates": [{"tag": "a1b2c3d-p5e6f7a8", "weight": 10}],
    "shadows": [{"tag": "b2c3d4e", "percent": 100}],
}


async def _describe(deployment: Deployment, load_ms: float | None = None) -> DeploymentOut:
    plan = deployment.plan()
    record = plan.record
    figures = await anyio.to_thread.run_sync(deployment_figures, plan)
    return DeploymentOut(
        revision=record.revision,
        updated_at=record.updated_at,
        updated_by=record.updated_by,
        action=record.action,
        reason=record.reason,
        spec=record.spec,
        previous=record.previous,
        history=record.history,
        figures=figures,
        load_ms=load_ms,
    )


async def _after(deployment: Deployment, outcome: ChangeOutcome) -> DeploymentOut:
    return await _describe(deployment, round(outcome.load_ms, 1))


@router.get(
    "/deployment",
    response_model=DeploymentOut,
    responses=MANAGEMENT_ERRORS,
    summary="The deployment spec serving now, its history and each arm's live figures",
)
@inject
async def get_deployment(
    deployment: DeploymentDep, tokens: AdminTokensDep, authorization: Authorization = None
) -> DeploymentOut:
    tokens.check(authorization)
    return await _describe(deployment)


@router.put(
    "/deployment",
    response_model=DeploymentOut,
    responses=MANAGEMENT_ERRORS,
    summary="Replace the deployment spec: primary, weighted candidates, shadows",
    description="Every tag must exist and pass the load checks of a swap; candidates and "
    "shadows must take the primary's features; weights are percents of traffic (0-100, at "
    "most 100 together; the primary gets the rest), shadows' percents the share of requests "
    "mirrored. Invalid specs are refused and the current one keeps serving.",
    openapi_extra={"requestBody": {"content": {"application/json": {"example": SPEC_EXAMPLE}}}},
)
@inject
async def put_deployment(
    spec: SpecBody,
    deployment: DeploymentDep,
    tokens: AdminTokensDep,
    authorization: Authorization = None,
) -> DeploymentOut:
    tokens.check(authorization)
    return await _after(deployment, await deployment.change(spec, by="api", action="put"))


@router.post(
    "/deployment/promote",
    response_model=DeploymentOut,
    responses=MANAGEMENT_ERRORS,
    summary="A candidate becomes the primary with all traffic",
)
@inject
async def promote(
    body: PromoteRequest,
    deployment: DeploymentDep,
    tokens: AdminTokensDep,
    authorization: Authorization = None,
) -> DeploymentOut:
    tokens.check(authorization)
    return await _after(deployment, await deployment.promote(validate_tag(body.tag), by="api"))


@router.post(
    "/deployment/rollback",
    response_model=DeploymentOut,
    responses=MANAGEMENT_ERRORS,
    summary="Back to the spec before the last change",
)
@inject
async def rollback(
    deployment: DeploymentDep, tokens: AdminTokensDep, authorization: Authorization = None
) -> DeploymentOut:
    tokens.check(authorization)
    return await _after(deployment, await deployment.rollback(by="api"))


@router.get(
    "/deployment/report",
    responses=MANAGEMENT_ERRORS,
    summary="Online quality per model, A/B statistics of the running split, bandit state",
    description="From the shared feedback store: the same on every worker and replica. Needs "
    "feedback enabled (ML_API_FEEDBACK_TOKEN).",
)
@inject
async def report(
    deployment: DeploymentDep,
    tokens: AdminTokensDep,
    store: FeedbackStoreDep,
    recorder: RecorderDep,
    authorization: Authorization = None,
) -> dict[str, Any]:
    tokens.check(authorization)
    if store is None:
        raise FeedbackDisabled("feedback is disabled: set ML_API_FEEDBACK_TOKEN to collect it")
    await recorder.flush()  # this worker's counts up to now; others' within a flush interval
    plan = deployment.plan()
    result: dict[str, Any] = await anyio.to_thread.run_sync(
        lambda: experiment_report(plan, store())
    )
    return result
