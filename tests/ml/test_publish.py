"""Stage publish: what goes to the registry, and that a failure publishes nothing."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.registry.meta import FeatureSpec
from app.registry.model_file import dump_model
from app.registry.store import ModelRegistry
from app.serving.model import load_verified
from ml import layout
from ml.params import Params
from ml.schema import missing_mask, model_frame, write_schema
from ml.stages import publish as publish_stage
from ml.stages.load import load
from ml.stages.preprocess import Prepared
from ml.stages.publish import recorded_params, reference_frame
from ml.stages.train import Trained
from tests.ml.project import PROJECT_ROOT
from tests.ml.test_pipeline import LIMITS


@pytest.fixture
def workspace(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prepared_penguins: Prepared,
    trained_logreg: Trained,
    penguins_csv: Path,
) -> Path:
    """A repository root holding every input of the publish stage, as the pipeline leaves it."""
    root = tmp_path / "repo"
    root.mkdir()
    monkeypatch.chdir(root)
    monkeypatch.setenv("ML_API_REGISTRY_URL", str(tmp_path / "registry"))
    monkeypatch.setenv("ML_API_EXPERIMENT_TAG", "unit-1")
    shutil.copy(PROJECT_ROOT / "params.yaml", root / "params.yaml")
    layout.write_json(layout.SOURCE_RECORD, load(str(penguins_csv), layout.RAW_DATA))
    layout.PREPARED_DIR.mkdir(parents=True, exist_ok=True)
    prepared_penguins.train.to_csv(layout.TRAIN_DATA, index=False)
    prepared_penguins.test.to_csv(layout.TEST_DATA, index=False)
    write_schema(prepared_penguins.schema, layout.SCHEMA_FILE)
    layout.MODEL_FILE.parent.mkdir(parents=True)
    layout.MODEL_FILE.write_bytes(dump_model(trained_logreg.model))
    layout.write_json(layout.TEST_METRICS, {"accuracy": 0.99})
    layout.write_json(layout.CV_METRICS, trained_logreg.cv_scores)
    return root


def published(workspace: Path) -> list[str]:
    return ModelRegistry(str(workspace.parent / "registry")).list_tags()


def test_publish_writes_a_loadable_active_experiment_and_its_record(workspace: Path) -> None:
    publish_stage.main()

    registry = ModelRegistry(str(workspace.parent / "registry"))
    model = load_verified(registry, "unit-1", LIMITS)
    record = json.loads(layout.PUBLISH_RECORD.read_text(encoding="utf-8"))
    assert record["tag"] == "unit-1"
    assert record["active"] is True
    assert record["already_published"] is False
    assert model.meta.metrics == {"accuracy": 0.99}
    assert model.meta.model_extra is not None
    source = json.loads(layout.SOURCE_RECORD.read_text(encoding="utf-8"))
    assert model.meta.model_extra["data_fingerprint"] == source["raw_sha256"]
    assert model.meta.model_extra["data_source_sha256"] == source["sha256"]
    assert model.meta.model_extra["data_contract"] == "ml/datasets/palmerpenguins.schema.yaml"
    # The registry holds the very bytes the train stage wrote (skops files are reproducible).
    model_sha256 = hashlib.sha256(layout.MODEL_FILE.read_bytes()).hexdigest()
    assert record["model_sha256"] == model_sha256
    assert json.loads(layout.PUBLISHED_MODEL.read_text(encoding="utf-8")) == {
        "model_sha256": model_sha256,
        "model_type": "logreg",
        "params_hash": model.meta.model_extra["params_hash"],
        "data_fingerprint": source["raw_sha256"],
        "data_source_sha256": source["sha256"],
    }


def test_publishing_a_published_tag_again_is_no_error(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    publish_stage.main()
    layout.write_json(layout.TEST_METRICS, {"accuracy": 0.5})

    publish_stage.main()

    record = json.loads(layout.PUBLISH_RECORD.read_text(encoding="utf-8"))
    assert record["already_published"] is True
    assert "already published with other metrics" in capsys.readouterr().err
    registry = ModelRegistry(str(workspace.parent / "registry"))
    assert registry.read_meta("unit-1").metrics == {"accuracy": 0.99}


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda: layout.MODEL_FILE.write_bytes(b"not a zip"), "model file is not a readable skops"),
        (lambda: layout.TEST_METRICS.unlink(), r"metrics/metrics\.json: not found"),
        (lambda: layout.SCHEMA_FILE.write_text("{}"), r"data/prepared/schema\.json: not a valid"),
        (
            lambda: Path("params.yaml").write_text("model: {type: xgb}\n"),
            r"params\.yaml: .*missing key 'data'",
        ),
    ],
    ids=["corrupt-model", "missing-metrics", "bad-schema", "bad-params"],
)
def test_failure_exits_1_with_one_line_and_publishes_nothing(
    workspace: Path,
    capsys: pytest.CaptureFixture[str],
    damage: Callable[[], object],
    message: str,
) -> None:
    damage()

    with pytest.raises(SystemExit) as exited:
        publish_stage.main()

    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("publish: error: ")
    assert len(err.strip().splitlines()) == 1
    assert re.search(message, err)
    assert published(workspace) == []
    assert not layout.PUBLISH_RECORD.exists()
    assert not layout.PUBLISHED_MODEL.exists()


def test_invalid_tag_override_publishes_nothing(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ML_API_EXPERIMENT_TAG", "no/slashes")

    with pytest.raises(SystemExit):
        publish_stage.main()

    assert "invalid experiment tag 'no/slashes'" in capsys.readouterr().err
    assert published(workspace) == []


def test_reference_rows_cover_every_class_and_a_missing_value(
    prepared_penguins: Prepared,
) -> None:
    schema = prepared_penguins.schema
    test = model_frame(prepared_penguins.test, schema.features)
    train = model_frame(prepared_penguins.train, schema.features)
    labels = prepared_penguins.test[schema.target]

    chosen = reference_frame(test, labels, train, schema.features, 5)

    assert len(chosen) == 5
    assert set(labels.loc[chosen.index[:4]]) == {"Adelie", "Chinstrap", "Gentoo"}
    assert bool(missing_mask(chosen, schema.features).to_numpy().any())


def test_reference_rows_prefer_a_test_row_with_a_missing_value() -> None:
    features = pd.DataFrame({"x": [1.0, 2.0, np.nan, 4.0]})
    labels = pd.Series(["a", "b", "a", "b"])
    specs = [FeatureSpec(name="x", dtype="float", nullable=True)]

    chosen = reference_frame(features, labels, features.iloc[:0], specs, 3)

    assert chosen["x"].tolist()[:2] == [1.0, 2.0]
    assert np.isnan(chosen["x"].tolist()[2])


def test_recorded_params_keep_only_the_chosen_estimator(params: Params) -> None:
    document = params.model_dump()

    recorded = recorded_params(document, "hgb")

    assert "logreg" not in recorded["model"]
    assert recorded["model"]["hgb"] == document["model"]["hgb"]
    assert recorded["data"] == document["data"]
