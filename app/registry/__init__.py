"""Model registry: storage of experiments and of the active pointer behind one fsspec URL."""

from app.registry.meta import (
    ActivePointer,
    ExperimentMeta,
    ExperimentSummary,
    FeatureSpec,
    Reference,
    validate_tag,
)
from app.registry.store import ModelRegistry

__all__ = [
    "ActivePointer",
    "ExperimentMeta",
    "ExperimentSummary",
    "FeatureSpec",
    "ModelRegistry",
    "Reference",
    "validate_tag",
]
