"""GET /get_experiment_metas: every published experiment, newest first."""

import anyio.to_thread
from dependency_injector.wiring import inject
from fastapi import APIRouter

from app.api.deps import RegistryDep
from app.schemas import ErrorResponse, ExperimentOut

router = APIRouter(tags=["experiments"])


@router.get(
    "/get_experiment_metas",
    response_model=list[ExperimentOut],
    responses={503: {"model": ErrorResponse, "description": "Registry unreachable."}},
    summary="List published experiments; the active one has active=true",
)
@inject
async def get_experiment_metas(registry: RegistryDep) -> list[ExperimentOut]:
    summaries = await anyio.to_thread.run_sync(registry.list_experiments)
    return [ExperimentOut.model_validate(s.model_dump()) for s in summaries]
