"""Where stages read and write, relative to the repository root; dvc.yaml names the same paths."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from app.registry import load_model, sha256_hex
from ml.errors import DataError

RAW_DATA = Path("data/raw.csv")
SOURCE_RECORD = Path("data/source.json")
PREPARED_DIR = Path("data/prepared")
TRAIN_DATA = PREPARED_DIR / "train.csv"
TEST_DATA = PREPARED_DIR / "test.csv"
SCHEMA_FILE = PREPARED_DIR / "schema.json"
VALIDATION_REPORT = PREPARED_DIR / "validation.json"
MODEL_FILE = Path("models/model.skops")
CV_METRICS = Path("metrics/cv.json")
TEST_METRICS = Path("metrics/metrics.json")
PLOTS_DIR = Path("plots")
CONFUSION_PLOT = PLOTS_DIR / "confusion.csv"
ROC_DIR = PLOTS_DIR / "roc"
PR_DIR = PLOTS_DIR / "pr"
PUBLISHED_MODEL = Path("reports/published-model.json")  # the publish stage's DVC output
PUBLISH_RECORD = Path("reports/publish.json")  # what the last publish did: not a DVC output


def write_json(path: Path, document: Any) -> None:
    """Write a small JSON output, creating its folder (DVC removes outputs before a run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def read_model(path: Path) -> Any:
    """The trained pipeline, loaded with the service's own checks (skops allow-list)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: not found: run the train stage first") from None
    return load_model(data, expected_sha256=sha256_hex(data))


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: not found: run the stage that writes it first") from None
