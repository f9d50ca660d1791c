"""dvc.yaml, params.yaml and the stage modules agree with each other."""

from __future__ import annotations

import configparser
import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from ml import layout
from tests.ml.project import PROJECT_ROOT

STAGES = ["load", "preprocess", "train", "evaluate", "publish"]


def dvc_yaml() -> dict[str, Any]:
    document = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def out_paths(stage: dict[str, Any]) -> list[str]:
    return [next(iter(out)) if isinstance(out, dict) else out for out in stage["outs"]]


def test_stages_run_in_order_as_modules_with_main() -> None:
    stages = dvc_yaml()["stages"]

    assert list(stages) == STAGES
    for name, stage in stages.items():
        assert stage["cmd"] == f"python -m ml.stages.{name}"
        assert callable(importlib.import_module(f"ml.stages.{name}").main)
        assert f"ml/stages/{name}.py" in stage["deps"]


def test_every_declared_path_exists_or_is_a_layout_path() -> None:
    stages = dvc_yaml()["stages"]
    produced = {path for stage in stages.values() for path in out_paths(stage)}
    known = {
        str(value)
        for value in vars(layout).values()
        if isinstance(value, Path) and value != layout.PREPARED_DIR
    }

    assert produced <= known
    for stage in stages.values():
        for dep in stage["deps"]:
            assert dep in produced or "${" in dep or (PROJECT_ROOT / dep).exists(), dep


@pytest.mark.parametrize("stage", STAGES)
def test_declared_params_exist(stage: str) -> None:
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8"))

    for key in dvc_yaml()["stages"][stage]["params"]:
        node = params
        for part in key.split("."):
            node = node[part]


def test_metrics_and_plots_are_stage_outputs_kept_in_git() -> None:
    document = dvc_yaml()
    uncached = {
        next(iter(out))
        for stage in document["stages"].values()
        for out in stage["outs"]
        if isinstance(out, dict) and next(iter(out.values())).get("cache") is False
    }

    assert set(document["metrics"]) <= uncached
    assert "plots" in uncached


def test_publish_is_never_restored_from_the_run_cache() -> None:
    (out,) = dvc_yaml()["stages"]["publish"]["outs"]

    assert out == {"reports/publish.json": {"persist": True}}


def test_default_remote_is_a_local_folder_inside_the_repo() -> None:
    config = configparser.ConfigParser()
    config.read(PROJECT_ROOT / ".dvc" / "config")

    assert config["core"]["remote"] == "local"
    url = config["'remote \"local\"'"]["url"]  # DVC quotes the section name
    assert not Path(url).is_absolute()
    assert "/storage" in (PROJECT_ROOT / ".dvc" / ".gitignore").read_text(encoding="utf-8")
