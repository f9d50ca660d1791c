"""Model registry: storage of experiments and of the deployment spec behind one fsspec URL.

This package is a leaf (it imports nothing of serving or publishing) and what it exports here
is the contract the training pipeline (``ml/``) relies on.
"""

from app.errors import ServiceError
from app.registry.meta import (
    MISSING_CATEGORY,
    ActivePointer,
    ExperimentMeta,
    ExperimentSummary,
    FeatureSpec,
    Reference,
    validate_tag,
)
from app.registry.model_file import dump_model, load_model, sha256_hex
from app.registry.spec import DeploymentRecord, SpecBody
from app.registry.store import ModelRegistry

__all__ = [
    "MISSING_CATEGORY",
    "ActivePointer",
    "DeploymentRecord",
    "ExperimentMeta",
    "ExperimentSummary",
    "FeatureSpec",
    "ModelRegistry",
    "Reference",
    "ServiceError",
    "SpecBody",
    "dump_model",
    "load_model",
    "sha256_hex",
    "validate_tag",
]
