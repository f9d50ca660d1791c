"""Annotated aliases: what routes receive from the container."""

from typing import Annotated

from dependency_injector.wiring import Provide
from fastapi import Depends

from app.container import Container
from app.metrics import ServiceMetrics
from app.registry.store import ModelRegistry
from app.security import AdminTokenChecker
from app.serving.holder import ModelHolder
from app.serving.prediction import PredictionService

PredictionServiceDep = Annotated[PredictionService, Depends(Provide[Container.prediction_service])]
ModelHolderDep = Annotated[ModelHolder, Depends(Provide[Container.model_holder])]
RegistryDep = Annotated[ModelRegistry, Depends(Provide[Container.registry])]
AdminTokensDep = Annotated[AdminTokenChecker, Depends(Provide[Container.admin_tokens])]
MetricsDep = Annotated[ServiceMetrics, Depends(Provide[Container.metrics])]
