"""POST /feedback: true labels or rewards for served predictions (own bearer token)."""

from typing import Annotated, Any

from dependency_injector.wiring import Provide, inject
from fastapi import APIRouter, Body, Depends, Header

from app.container import Container
from app.errors import FeedbackRejected
from app.feedback.service import FeedbackItem, FeedbackService
from app.schemas import FEEDBACK_ERRORS, FeedbackBatch, FeedbackIn, FeedbackOut
from app.security import AdminTokenChecker

router = APIRouter(tags=["feedback"])

FeedbackTokensDep = Annotated[AdminTokenChecker, Depends(Provide[Container.feedback_tokens])]
FeedbackServiceDep = Annotated[FeedbackService, Depends(Provide[Container.feedback_service])]

EXAMPLES = {
    "label": {
        "value": {
            "request_id": "mi5k2x1a.3f9a0c1b2d4e5f60.9a8b7c6d5e4f3a2b",
            "row": 0,
            "label": "Adelie",
        }
    },
    "reward": {"value": {"request_id": "order-1001", "reward": 1.0}},
    "many": {
        "value": {
            "items": [
                {"request_id": "order-1001", "row": 0, "label": "Gentoo"},
                {"request_id": "order-1002", "reward": 0.0},
            ]
        }
    },
}


def _item(body: FeedbackIn) -> FeedbackItem:
    return FeedbackItem(body.request_id, body.row, body.label, body.reward)


@router.post(
    "/feedback",
    response_model=FeedbackOut,
    responses=FEEDBACK_ERRORS,
    summary="The true label (or a reward) of a served prediction, joined to what was predicted",
    description='One item, or many as `{"items": [...]}`. The same (request id, row) counts '
    "once. For one item a refusal is a 4xx naming why (malformed, forged, unknown or expired "
    "request id, row out of range, unknown label); for many, the answer lists each item's "
    "outcome.",
)
@inject
async def feedback(
    body: Annotated[FeedbackIn | FeedbackBatch, Body(openapi_examples=EXAMPLES)],
    service: FeedbackServiceDep,
    tokens: FeedbackTokensDep,
    authorization: Annotated[str | None, Header()] = None,
) -> Any:
    tokens.check(authorization)
    items = [_item(i) for i in body.items] if isinstance(body, FeedbackBatch) else [_item(body)]
    outcomes = await service.submit(items)
    accepted = sum(o.status == "accepted" for o in outcomes)
    duplicates = sum(o.status == "duplicate" for o in outcomes)
    if isinstance(body, FeedbackIn) and outcomes[0].http_status >= 400:
        raise FeedbackRejected(outcomes[0].message, outcomes[0].status, outcomes[0].http_status)
    return FeedbackOut(
        accepted=accepted,
        duplicates=duplicates,
        rejected=len(outcomes) - accepted - duplicates,
        results=[o.as_dict() for o in outcomes],
    )
