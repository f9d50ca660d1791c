"""params.yaml, read and checked once: a typo stops the first stage with the key it names.

Every value lives in params.yaml (no defaults here), so DVC's params tracking sees every
knob that changes a result, and editing this module never silently changes a model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from ml.errors import ParamsError

PARAMS_FILE = Path("params.yaml")
# Dataset descriptions and data contracts: a dependency of the load stage in dvc.yaml.
DATASETS_DIR = PurePosixPath("ml/datasets")
ModelType = Literal["logreg", "hgb"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataParams(_Section):
    """Stage ``load`` (source, contract) and ``preprocess`` (target, dropped columns)."""

    source: str = Field(min_length=1)
    # The data contract every extract is checked against (ml/contract.py), or null for none.
    contract: str | None
    target: str = Field(min_length=1)
    drop_columns: list[str]

    @field_validator("contract")
    @classmethod
    def _contract_in_datasets_dir(cls, value: str | None) -> str | None:
        # Inside ml/datasets/, DVC sees every edit of the contract (the folder is a dependency).
        if value is None:
            return value
        path = PurePosixPath(value)
        inside = path.parts[: len(DATASETS_DIR.parts)] == DATASETS_DIR.parts
        if path.is_absolute() or not inside or ".." in path.parts or path.suffix != ".yaml":
            raise ValueError(f"must be a .yaml file in {DATASETS_DIR}/ or null")
        return value


class PreprocessParams(_Section):
    test_size: float = Field(gt=0, lt=1)
    seed: int
    # A text column whose values are numbers at least this often is a numeric column
    # with stray strings (a data error), not a categorical one.
    numeric_share: float = Field(gt=0, le=1)
    max_categories: int = Field(ge=2)


class LogregParams(_Section):
    C: float = Field(gt=0)
    max_iter: int = Field(ge=1)


class HgbParams(_Section):
    learning_rate: float = Field(gt=0)
    max_iter: int = Field(ge=1)
    max_leaf_nodes: int = Field(ge=2)
    max_depth: int | None = Field(ge=1)
    min_samples_leaf: int = Field(ge=1)
    l2_regularization: float = Field(ge=0)


class ModelParams(_Section):
    """Stage ``train``: which estimator, its hyperparameters, the seed and CV folds."""

    type: ModelType
    seed: int
    cv_folds: int = Field(ge=2)
    logreg: LogregParams
    hgb: HgbParams

    def hyperparameters(self) -> dict[str, Any]:
        """Hyperparameters of the chosen estimator only."""
        chosen = self.logreg if self.type == "logreg" else self.hgb
        return chosen.model_dump()


class RobustnessParams(_Section):
    # Gaussian noise with this share of each numeric feature's standard deviation.
    noise_scale: float = Field(ge=0)
    # Share of values of every feature blanked to missing.
    missing_share: float = Field(ge=0, lt=1)
    seed: int


class EvaluateParams(_Section):
    robustness: RobustnessParams


class PublishParams(_Section):
    reference_rows: int = Field(ge=1, le=50)


class Params(_Section):
    data: DataParams
    preprocess: PreprocessParams
    model: ModelParams
    evaluate: EvaluateParams
    publish: PublishParams


def read_params_document(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """params.yaml as plain data, for hashing and for the experiment record."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found (run stages from the repository root)") from None
    return parse_params_text(text, path)


def parse_params_text(text: str, path: Path = PARAMS_FILE) -> dict[str, Any]:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {_one_line(str(exc))}") from None
    if not isinstance(document, dict):
        raise ParamsError(f"{path}: expected a mapping of sections (data, model, ...)")
    return document


def load_params(path: Path = PARAMS_FILE) -> Params:
    return validate_params(read_params_document(path), path)


def validate_params(document: dict[str, Any], path: Path = PARAMS_FILE) -> Params:
    try:
        return Params.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors())
        raise ParamsError(f"{path}: {problems}") from None


def params_hash(document: dict[str, Any]) -> str:
    """Short, formatting-independent hash of the parameter values."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:8]


def _describe(error: ErrorDetails) -> str:
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown key {key!r}"
    if error["type"] == "missing":
        return f"missing key {key!r}"
    return f"key {key!r}: {error['msg']} (got {error['input']!r})"


def _one_line(text: str) -> str:
    return " ".join(text.split())
