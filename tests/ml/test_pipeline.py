"""The whole pipeline (`dvc repro`, `dvc exp run`) on the default data, in a copy of the repo."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from app.registry.store import ModelRegistry
from app.serving.inputs import InputLimits
from app.serving.model import LoadedModel, load_verified
from ml.errors import ReportError
from ml.layout import RAW_DATA, SCHEMA_FILE, TEST_DATA
from ml.report import write_report
from ml.schema import json_rows, read_schema, read_split
from tests.ml.conftest import PenguinsRun
from tests.ml.project import PROJECT_ROOT, Project

LIMITS = InputLimits(max_rows=1000, max_string_length=256)


def registry_of(project: Project) -> ModelRegistry:
    return ModelRegistry(str(project.registry))


def service_accuracy(model: LoadedModel, project: Project) -> float:
    """Accuracy on the test split when rows go through the service's input path."""
    schema = read_schema(project.root / SCHEMA_FILE)
    features, labels = read_split(project.root / TEST_DATA, schema)
    batch = model.schema.rows_to_batch(json_rows(features, schema.features))
    predicted = np.asarray(model.predict(batch).labels)
    return float((predicted == labels.to_numpy()).mean())


def test_repro_publishes_the_baseline_as_the_active_experiment(penguins_run: PenguinsRun) -> None:
    registry = registry_of(penguins_run.project)
    meta = registry.read_meta(penguins_run.baseline_tag)
    raw = (penguins_run.project.root / RAW_DATA).read_bytes()

    assert penguins_run.baseline_tag == penguins_run.baseline_commit[:7]
    active = registry.read_active()
    assert active is not None
    assert active.tag == penguins_run.baseline_tag
    assert meta.model_type == "logreg"
    assert meta.git_commit == penguins_run.baseline_commit
    assert meta.metrics == penguins_run.baseline_metrics
    assert meta.model_extra is not None
    assert meta.model_extra["data_fingerprint"] == hashlib.sha256(raw).hexdigest()
    assert meta.model_extra["cv_scores"] == penguins_run.baseline_cv
    assert [f.name for f in meta.features] == [
        "island",
        "bill_length_mm",
        "bill_depth_mm",
        "flipper_length_mm",
        "body_mass_g",
        "sex",
    ]
    assert set(meta.params["model"]) == {"type", "seed", "cv_folds", "logreg"}


@pytest.mark.parametrize("which", ["baseline", "hgb"])
def test_published_experiments_load_in_the_service_and_reproduce_their_metrics(
    penguins_run: PenguinsRun, which: str
) -> None:
    tag, metrics = {
        "baseline": (penguins_run.baseline_tag, penguins_run.baseline_metrics),
        "hgb": (penguins_run.hgb_tag, penguins_run.hgb_metrics),
    }[which]

    model = load_verified(registry_of(penguins_run.project), tag, LIMITS)

    instances = model.meta.reference.instances
    assert len(instances) == 5
    assert any(value is None for row in instances for value in row.values())
    assert service_accuracy(model, penguins_run.project) == pytest.approx(metrics["accuracy"])


def test_second_repro_reruns_nothing(penguins_run: PenguinsRun) -> None:
    assert "Running stage" not in penguins_run.noop_repro_stdout
    assert penguins_run.noop_status == {}


def test_running_the_pipeline_twice_gives_identical_metrics(penguins_run: PenguinsRun) -> None:
    assert penguins_run.rerun_metrics == penguins_run.baseline_metrics
    assert penguins_run.rerun_cv == penguins_run.baseline_cv


def test_forced_rerun_writes_byte_identical_outputs(penguins_run: PenguinsRun) -> None:
    first, again = penguins_run.first_outputs, penguins_run.rerun_outputs

    assert {
        "data/raw.csv",
        "data/source.json",
        "data/prepared/train.csv",
        "models/model.skops",
        "metrics/cv.json",
        "metrics/metrics.json",
        "plots/confusion.csv",
        "reports/published-model.json",
    } <= set(first)
    different = sorted(
        path for path in first.keys() | again.keys() if first.get(path) != again.get(path)
    )
    assert not different, f"outputs differ between two runs of the same commit: {different}"


def test_forced_rerun_leaves_dvc_lock_and_committed_results_unchanged(
    penguins_run: PenguinsRun,
) -> None:
    assert penguins_run.rerun_lock == penguins_run.fresh_lock
    # dvc.lock, metrics/ and plots/ are committed: a rerun must not show up in git.
    assert penguins_run.rerun_git_status == ""


def test_the_registry_holds_the_model_file_dvc_tracks(penguins_run: PenguinsRun) -> None:
    meta = registry_of(penguins_run.project).read_meta(penguins_run.baseline_tag)

    assert meta.model_sha256 == penguins_run.first_outputs["models/model.skops"]


def test_a_fresh_clone_publishes_and_leaves_git_clean(penguins_run: PenguinsRun) -> None:
    # What `make run` does first on a new machine: outputs are rebuilt from the committed
    # dvc.lock, the baseline is published, and nothing committed changes.
    assert "Running stage 'publish'" in penguins_run.repro_stdout
    assert penguins_run.fresh_git_status == ""


def test_committed_dvc_lock_is_what_a_fresh_run_writes(penguins_run: PenguinsRun) -> None:
    """The repository's dvc.lock is up to date: after changing a stage's code, data or params,
    run `dvc repro` and commit dvc.lock, metrics/ and plots/ with the change."""
    fresh = yaml.safe_load(penguins_run.fresh_lock)
    committed = yaml.safe_load((PROJECT_ROOT / "dvc.lock").read_text(encoding="utf-8"))

    stale = [
        f"{stage}: {path}"
        for stage in sorted(fresh["stages"].keys() | committed["stages"].keys())
        for path in _lock_differences(
            fresh["stages"].get(stage, {}), committed["stages"].get(stage, {})
        )
    ]
    assert not stale, f"dvc.lock is stale (run `dvc repro` and commit it): {stale}"


def _lock_differences(fresh: dict[str, Any], committed: dict[str, Any]) -> list[str]:
    def entries(stage: dict[str, Any]) -> dict[str, Any]:
        found: dict[str, Any] = {"cmd": stage.get("cmd"), "params": stage.get("params")}
        for kind in ("deps", "outs"):
            for entry in stage.get(kind, []):
                found[f"{kind} {entry['path']}"] = entry
        return found

    ours, theirs = entries(fresh), entries(committed)
    return sorted(key for key in ours.keys() | theirs.keys() if ours.get(key) != theirs.get(key))


def test_hgb_experiment_is_published_under_its_own_tag(penguins_run: PenguinsRun) -> None:
    registry = registry_of(penguins_run.project)

    assert re.fullmatch(r"[0-9a-f]{7}-p[0-9a-f]{8}", penguins_run.hgb_tag)
    assert penguins_run.hgb_tag != penguins_run.baseline_tag
    assert registry.read_meta(penguins_run.hgb_tag).model_type == "hgb"
    assert penguins_run.hgb_metrics != penguins_run.baseline_metrics


def test_training_again_keeps_both_experiments_and_the_baseline_active(
    penguins_run: PenguinsRun,
) -> None:
    registry = registry_of(penguins_run.project)

    assert penguins_run.second_train_tags[1] == penguins_run.hgb_tag
    assert registry.list_tags() == sorted([penguins_run.baseline_tag, penguins_run.hgb_tag])
    active = registry.read_active()
    assert active is not None
    assert active.tag == penguins_run.baseline_tag


def test_dvc_pull_restores_outputs_from_the_local_remote(penguins_run: PenguinsRun) -> None:
    project = penguins_run.project
    model = project.root / "models" / "model.skops"
    expected = model.read_bytes()
    project.dvc("push")
    shutil.rmtree(project.root / ".dvc" / "cache")
    shutil.rmtree(project.root / "data")
    model.unlink()

    project.dvc("pull")

    assert model.read_bytes() == expected
    assert (project.root / RAW_DATA).is_file()
    assert project.dvc("status", "--json").stdout.strip() in {"", "{}"}


def test_report_compares_the_experiment_with_main(
    penguins_run: PenguinsRun, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(penguins_run.project.root)
    output = tmp_path / "out" / "report.md"

    write_report(output, baseline_rev="main")

    text = output.read_text(encoding="utf-8")
    assert "`main`" in text
    assert re.search(r"\| metrics/metrics\.json\s*\| accuracy\s*\|", text)
    assert re.search(r"\| model\.type\s*\| logreg\s*\| hgb", text)
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert "report-confusion.png" in images
    assert "report-roc-Adelie.png" in images
    assert "report-pr-Gentoo.png" in images
    for name in images:
        assert (output.parent / name).read_bytes().startswith(b"\x89PNG")


def test_report_against_an_unknown_revision_names_it(
    penguins_run: PenguinsRun, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(penguins_run.project.root)

    with pytest.raises(ReportError, match="no-such-branch"):
        write_report(tmp_path / "report.md", baseline_rev="no-such-branch")
