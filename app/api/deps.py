"""Annotated aliases: what routes receive from the container."""

from typing import Annotated

from dependency_injector.wiring import Provide
from fastapi import Depends

from app.container import Container
from app.feedback.recorder import PredictionRecorder
from app.feedback.store import StoreHandle
from app.registry.store import ModelRegistry
from app.security import AdminTokenChecker
from app.serving.deployment import Deployment

DeploymentDep = Annotated[Deployment, Depends(Provide[Container.deployment])]
FeedbackStoreDep = Annotated[StoreHandle | None, Depends(Provide[Container.feedback_store])]
RecorderDep = Annotated[PredictionRecorder, Depends(Provide[Container.recorder])]
RegistryDep = Annotated[ModelRegistry, Depends(Provide[Container.registry])]
AdminTokensDep = Annotated[AdminTokenChecker, Depends(Provide[Container.admin_tokens])]
