"""dvc.yaml, params.yaml and the stage modules agree with each other."""

from __future__ import annotations

import ast
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
    return [next(iter(out)) if isinstance(out, dict) else out for out in stage.get("outs", [])]


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
        for out in stage.get("outs", [])
        if isinstance(out, dict) and next(iter(out.values())).get("cache") is False
    }

    assert set(document["metrics"]) <= uncached
    assert "plots" in uncached


def test_publish_output_is_never_restored_from_the_run_cache() -> None:
    # persist keeps a stage out of DVC's run-cache (dvc/stage/cache.py, _can_hash): a cached
    # publish would skip the registry write. Its run record (tag, commit) is no output: it
    # changes with every commit, and dvc.lock must not.
    (out,) = dvc_yaml()["stages"]["publish"]["outs"]

    assert out == {str(layout.PUBLISHED_MODEL): {"persist": True}}
    assert layout.PUBLISH_RECORD.parts[0] == "reports"
    assert "/reports/" in (PROJECT_ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()


def test_load_tracks_the_source_the_contracts_and_what_it_read() -> None:
    load = dvc_yaml()["stages"]["load"]

    assert {"${data.source}", "ml/datasets", "ml/contract.py"} <= set(load["deps"])
    assert {"data.source", "data.contract"} <= set(load["params"])
    assert out_paths(load) == [str(layout.RAW_DATA), str(layout.SOURCE_RECORD)]
    assert str(layout.SOURCE_RECORD) in dvc_yaml()["stages"]["publish"]["deps"]


def test_dvc_ignores_the_local_registry_but_not_the_registry_code() -> None:
    # A bare "registry/" would also hide app/registry/, a dependency of train and publish.
    patterns = (PROJECT_ROOT / ".dvcignore").read_text(encoding="utf-8").splitlines()

    assert "/registry/" in patterns
    assert "registry/" not in patterns
    assert "__pycache__/" in patterns


def test_default_remote_is_a_local_folder_inside_the_repo() -> None:
    config = configparser.ConfigParser()
    config.read(PROJECT_ROOT / ".dvc" / "config")

    assert config["core"]["remote"] == "local"
    url = config["'remote \"local\"'"]["url"]  # DVC quotes the section name
    assert not Path(url).is_absolute()
    assert "/storage" in (PROJECT_ROOT / ".dvc" / ".gitignore").read_text(encoding="utf-8")


def _project_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name.split(".")[0] in {"app", "ml"}}


def _module_file(name: str) -> Path | None:
    base = PROJECT_ROOT.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.exists():
            return candidate
    return None


def _has_code(path: Path) -> bool:
    body = ast.parse(path.read_text(encoding="utf-8")).body
    docstring = (
        body[:1] and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
    )
    return len(body) > (1 if docstring else 0)


def imported_files(module: str) -> set[Path]:
    """Every project file ``module`` imports, directly or not (packages' __init__ included)."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        parts = todo.pop().split(".")
        for end in range(1, len(parts) + 1):
            found = _module_file(".".join(parts[:end]))
            if found is not None and found not in seen:
                seen.add(found)
                todo.extend(_project_imports(found))
    return seen


@pytest.mark.parametrize("stage", STAGES)
def test_every_module_a_stage_imports_is_a_dependency(stage: str) -> None:
    """A change to any module a stage imports must rerun it: each one (package markers with no
    code aside) is a dependency, itself or through its folder."""
    deps = [PROJECT_ROOT / dep for dep in dvc_yaml()["stages"][stage]["deps"] if "${" not in dep]
    missing = sorted(
        str(path.relative_to(PROJECT_ROOT))
        for path in imported_files(f"ml.stages.{stage}")
        if _has_code(path) and not any(path == dep or dep in path.parents for dep in deps)
    )
    assert not missing, f"{stage} imports {missing} but dvc.yaml does not list them"


def test_the_import_walk_sees_through_packages() -> None:
    """The check above can fail: publish reaches app/serving/inputs.py only through
    app.publishing."""
    files = {str(p.relative_to(PROJECT_ROOT)) for p in imported_files("ml.stages.publish")}
    assert {"app/publishing/publish.py", "app/serving/inputs.py", "app/registry/store.py"} <= files
