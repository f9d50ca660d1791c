"""The closed loop's endpoints: Alertmanager's webhook, and the trigger's decisions."""

from typing import Annotated, Any

import anyio.to_thread
from dependency_injector.wiring import Provide, inject
from fastapi import APIRouter, Depends, Header, Query

from app.api.deps import AdminTokensDep
from app.container import Container
from app.retraining.alerts import AlertmanagerPayload
from app.retraining.trigger import RetrainTrigger
from app.schemas import MANAGEMENT_ERRORS
from app.security import AdminTokenChecker

router = APIRouter(tags=["retraining"])

TriggerDep = Annotated[RetrainTrigger, Depends(Provide[Container.retrain_trigger])]
WebhookTokensDep = Annotated[AdminTokenChecker, Depends(Provide[Container.webhook_tokens])]


@router.post(
    "/alerts/webhook",
    responses=MANAGEMENT_ERRORS,
    summary="Alertmanager's webhook: drift and quality alerts that may start a retraining",
    description="Each firing drift or online-quality alert on the primary, with enough data "
    "behind it and outside the cool-down, starts the retraining pipeline (GitLab trigger API); "
    "every decision is answered, logged, counted and kept (GET /retraining/decisions).",
)
@inject
async def alertmanager_webhook(
    payload: AlertmanagerPayload,
    trigger: TriggerDep,
    tokens: WebhookTokensDep,
    authorization: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    tokens.check(authorization)
    decisions = await trigger.handle(payload)
    return {"decisions": [d.__dict__ for d in decisions]}


@router.get(
    "/retraining/decisions",
    tags=["management"],
    responses=MANAGEMENT_ERRORS,
    summary="The retraining trigger's decisions, newest first (shared by every replica)",
)
@inject
async def decisions(
    trigger: TriggerDep,
    tokens: AdminTokensDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    authorization: Annotated[str | None, Header()] = None,
) -> list[dict[str, Any]]:
    tokens.check(authorization)
    return await anyio.to_thread.run_sync(trigger.decisions, limit)
