"""Pipeline runs shared by the tests: each is expensive (processes importing scikit-learn), so
it runs once per session and tests assert on what it recorded."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ml.layout import PUBLISHED_MODEL
from ml.params import DataParams, Params, PreprocessParams, load_params
from ml.schema import model_frame
from ml.sources import fetch
from ml.stages.preprocess import Prepared, preprocess
from ml.stages.train import Trained, train
from ml.validation import read_raw
from tests.ml.frames import custom_frame
from tests.ml.project import PROJECT_ROOT, Project, make_project


@dataclass(frozen=True)
class PenguinsRun:
    """What `make train` does on a fresh clone, then the same again, with checks in between."""

    project: Project
    repro_seconds: float
    repro_stdout: str
    fresh_git_status: str
    baseline_tag: str
    baseline_commit: str
    baseline_metrics: dict[str, Any]
    baseline_cv: dict[str, Any]
    noop_repro_stdout: str
    noop_status: dict[str, Any]
    rerun_metrics: dict[str, Any]
    rerun_cv: dict[str, Any]
    fresh_lock: str
    first_outputs: dict[str, str]
    rerun_outputs: dict[str, str]
    rerun_lock: str
    rerun_git_status: str
    hgb_tag: str
    hgb_metrics: dict[str, Any]
    second_train_tags: tuple[str, str]


@dataclass(frozen=True)
class CustomRun:
    project: Project
    tag: str
    commit: str
    metrics: dict[str, Any]
    schema: dict[str, Any]


@pytest.fixture(scope="session")
def penguins_run(tmp_path_factory: pytest.TempPathFactory, pycache: Path) -> PenguinsRun:
    project = make_project(tmp_path_factory.mktemp("penguins"), pycache)
    project.commit_all("pipeline")
    started = time.perf_counter()
    repro = project.dvc("repro")  # in a fresh clone: the committed dvc.lock, no data
    repro_seconds = time.perf_counter() - started
    fresh_git_status = project.git("status", "--porcelain")
    baseline = project.read_json("reports/publish.json")
    baseline_metrics = project.read_json("metrics/metrics.json")
    baseline_cv = project.read_json("metrics/cv.json")
    fresh_lock = (project.root / "dvc.lock").read_text(encoding="utf-8")
    first_outputs = output_hashes(project.root)
    noop = project.dvc("repro")
    status = project.dvc("status", "--json")
    # The baseline results are "main", the revision the report compares against: committed
    # already when the repository's dvc.lock is up to date, else committed now.
    if fresh_git_status:
        project.commit_all("baseline results")
    # Every stage again, in new processes (new hash seeds); publish under the same tag.
    project.dvc("repro", "--force", env={"ML_API_EXPERIMENT_TAG": baseline["tag"]})
    rerun_metrics = project.read_json("metrics/metrics.json")
    rerun_cv = project.read_json("metrics/cv.json")
    rerun_outputs = output_hashes(project.root)
    rerun_lock = (project.root / "dvc.lock").read_text(encoding="utf-8")
    rerun_git_status = project.git("status", "--porcelain")
    project.dvc("exp", "run", "-S", "model.type=hgb")
    hgb = project.read_json("reports/publish.json")
    hgb_metrics = project.read_json("metrics/metrics.json")
    # `make train` once more (its `dvc repro` is the no-op checked above): the registry
    # already holds both experiments.
    project.dvc("exp", "run", "-S", "model.type=hgb")
    again = project.read_json("reports/publish.json")
    return PenguinsRun(
        project=project,
        repro_seconds=repro_seconds,
        repro_stdout=repro.stdout,
        fresh_git_status=fresh_git_status,
        baseline_tag=baseline["tag"],
        baseline_commit=baseline["git_commit"],
        baseline_metrics=baseline_metrics,
        baseline_cv=baseline_cv,
        noop_repro_stdout=noop.stdout,
        noop_status=_json_or_empty(status.stdout),
        rerun_metrics=rerun_metrics,
        rerun_cv=rerun_cv,
        fresh_lock=fresh_lock,
        first_outputs=first_outputs,
        rerun_outputs=rerun_outputs,
        rerun_lock=rerun_lock,
        rerun_git_status=rerun_git_status,
        hgb_tag=hgb["tag"],
        hgb_metrics=hgb_metrics,
        second_train_tags=(baseline["tag"], again["tag"]),
    )


# Every folder the stages write (the outs of dvc.yaml), and publish's output.
OUTPUT_DIRS = ("data", "models", "metrics", "plots")


def output_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file the pipeline wrote, by path relative to ``root``."""
    paths = [path for folder in OUTPUT_DIRS for path in (root / folder).rglob("*")]
    paths.append(root / PUBLISHED_MODEL)
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(paths)
        if path.is_file()
    }


def _json_or_empty(text: str) -> dict[str, Any]:
    import json

    document = json.loads(text) if text.strip() else {}
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="session")
def custom_run(tmp_path_factory: pytest.TempPathFactory, pycache: Path) -> CustomRun:
    project = make_project(tmp_path_factory.mktemp("custom"), pycache)
    (project.root / "datasets").mkdir()
    custom_frame().to_csv(project.root / "datasets" / "animals.csv", index=False)
    project.update_params(
        {
            "data": {
                "source": "datasets/animals.csv",
                "contract": None,
                "target": "grade",
                "drop_columns": ["row_id"],
            },
            "model": {"cv_folds": 3},
        }
    )
    commit = project.commit_all("custom data")
    project.dvc("repro")
    return CustomRun(
        project=project,
        tag=project.read_json("reports/publish.json")["tag"],
        commit=commit,
        metrics=project.read_json("metrics/metrics.json"),
        schema=project.read_json("data/prepared/schema.json"),
    )


@pytest.fixture(scope="session")
def params() -> Params:
    return load_params(PROJECT_ROOT / "params.yaml")


@pytest.fixture
def data_params(params: Params) -> DataParams:
    return params.data


@pytest.fixture
def preprocess_params(params: Params) -> PreprocessParams:
    return params.preprocess


@pytest.fixture(scope="session")
def penguins_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("raw") / "penguins.csv"
    path.write_bytes(fetch(str(PROJECT_ROOT / "ml" / "datasets" / "palmerpenguins.yaml")).raw_csv)
    return path


@pytest.fixture(scope="session")
def prepared_penguins(penguins_csv: Path, params: Params) -> Prepared:
    raw = read_raw(penguins_csv, "penguins")
    return preprocess(raw, source="penguins", data=params.data, params=params.preprocess)


@pytest.fixture(scope="session")
def trained_logreg(prepared_penguins: Prepared, params: Params) -> Trained:
    schema = prepared_penguins.schema
    features = model_frame(prepared_penguins.train, schema.features)
    labels = prepared_penguins.train[schema.target]
    return train(features, labels, schema, params.model)
