"""params.yaml checks: a typo stops the pipeline with a message naming the file and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ml.errors import ParamsError
from ml.params import load_params, params_hash, parse_params_text, validate_params
from tests.ml.project import PROJECT_ROOT


def document() -> dict[str, Any]:
    loaded = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_project_params_are_valid() -> None:
    params = load_params(PROJECT_ROOT / "params.yaml")

    assert params.model.type == "logreg"
    assert params.data.drop_columns == ["year"]


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        (
            "model",
            "type",
            "xgboost",
            r"params\.yaml: key 'model\.type': Input should be 'logreg' or 'hgb'",
        ),
        ("model", "typo", 1, r"params\.yaml: unknown key 'model\.typo'"),
        ("preprocess", "test_size", 1.5, r"key 'preprocess\.test_size'.*less than 1"),
        ("model", "cv_folds", 1, r"key 'model\.cv_folds'"),
    ],
)
def test_bad_params_name_the_key(section: str, key: str, value: object, message: str) -> None:
    changed = document()
    changed[section][key] = value

    with pytest.raises(ParamsError, match=message):
        validate_params(changed)


def test_unknown_hyperparameter_is_named() -> None:
    changed = document()
    changed["model"]["hgb"]["learning_rte"] = 0.1

    with pytest.raises(ParamsError, match=r"unknown key 'model\.hgb\.learning_rte'"):
        validate_params(changed)


def test_missing_section_is_named() -> None:
    changed = document()
    del changed["evaluate"]

    with pytest.raises(ParamsError, match=r"missing key 'evaluate'"):
        validate_params(changed)


def test_unreadable_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("model: [unclosed\n", encoding="utf-8")

    with pytest.raises(ParamsError, match=r"params\.yaml: not valid YAML"):
        load_params(path)


def test_missing_params_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=r"params\.yaml: file not found"):
        load_params(tmp_path / "params.yaml")


def test_params_hash_ignores_formatting_and_key_order() -> None:
    a = parse_params_text("model: {type: hgb, seed: 1}\n")
    b = parse_params_text("# comment\nmodel:\n  seed: 1\n  type: hgb\n")

    assert params_hash(a) == params_hash(b)
    assert params_hash(a) != params_hash(parse_params_text("model: {type: hgb, seed: 2}\n"))
