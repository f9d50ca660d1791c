"""The registry behaves the same on a local folder and on S3 (a real S3 server on 127.0.0.1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.container import Container
from app.errors import BrokenExperiment, ExperimentExists, ExperimentNotFound, InvalidTag
from app.registry.store import ModelRegistry, storage_options_for
from app.settings import Settings
from tests.models import publish


@pytest.fixture(params=["local", "s3"])
def any_registry(request: pytest.FixtureRequest, registry_dir: Path) -> ModelRegistry:
    if request.param == "local":
        return ModelRegistry(str(registry_dir))
    return ModelRegistry(request.getfixturevalue("s3_registry_url"))


def test_lists_published_experiments_newest_first(any_registry: ModelRegistry) -> None:
    page = any_registry.list_experiments()
    listed = page.experiments
    assert page.total == 2
    assert [e.tag for e in listed] == ["boost", "base"]  # tests/conftest.py publishes base first
    assert listed[0].created_at is not None
    assert listed[0].created_at >= listed[1].created_at  # type: ignore[operator]


def test_meta_round_trips_and_records_schema(any_registry: ModelRegistry) -> None:
    meta = any_registry.read_meta("boost")
    assert meta.model_type == "hgb"
    assert [f.name for f in meta.features][:2] == ["island", "sex"]
    assert meta.classes == ["Adelie", "Chinstrap", "Gentoo"]
    assert len(meta.reference.instances) == len(meta.reference.labels) == 8
    assert {"python", "scikit-learn", "skops"} <= set(meta.versions)
    assert set(meta.training_profile) == {f.name for f in meta.features}


def test_published_experiments_are_immutable(any_registry: ModelRegistry) -> None:
    with pytest.raises(ExperimentExists):
        publish(any_registry, "boost", "logreg")
    assert any_registry.read_meta("boost").model_type == "hgb"


def test_active_pointer_records_who_when_previous(any_registry: ModelRegistry) -> None:
    pointer = any_registry.write_active("boost", updated_by="alice", previous_tag="base")
    read = any_registry.read_active()
    assert read == pointer
    assert (read.tag, read.updated_by, read.previous_tag) == ("boost", "alice", "base")


def test_unknown_tag(any_registry: ModelRegistry) -> None:
    with pytest.raises(ExperimentNotFound):
        any_registry.read_meta("missing")


@pytest.mark.parametrize("tag", ["../active", "a/../../b", "..", "/abs", "a\\b", "-x"])
def test_path_tricks_are_refused(any_registry: ModelRegistry, tag: str) -> None:
    with pytest.raises(InvalidTag):
        any_registry.read_meta(tag)
    with pytest.raises(InvalidTag):
        any_registry.write_active(tag, updated_by="x", previous_tag=None)


def test_corrupt_pointer_is_reported_not_guessed(registry_dir: Path) -> None:
    (registry_dir / "active.json").write_text('{"tag": "bo')
    registry = ModelRegistry(str(registry_dir))
    with pytest.raises(BrokenExperiment, match=r"active\.json"):
        registry.read_active()
    assert registry.read_active_or_none() is None


def test_local_pointer_write_leaves_no_temporary_files(registry_dir: Path) -> None:
    registry = ModelRegistry(str(registry_dir))
    for tag in ["boost", "base", "boost"]:
        registry.write_active(tag, updated_by="t", previous_tag=None)
    assert sorted(p.name for p in registry_dir.iterdir()) == ["active.json", "experiments"]
    assert json.loads((registry_dir / "active.json").read_text())["tag"] == "boost"


def test_folder_without_meta_is_not_listed(registry_dir: Path) -> None:
    (registry_dir / "experiments" / "halfway").mkdir()
    (registry_dir / "experiments" / "halfway" / "model.skops").write_bytes(b"partial")
    tags = [e.tag for e in ModelRegistry(str(registry_dir)).list_experiments().experiments]
    assert tags == ["boost", "base"]


def test_s3_registry_gives_up_in_seconds_unless_told_otherwise(s3_endpoint: str) -> None:
    """botocore's defaults (60 s connect timeout, 5 attempts inside each of s3fs's 5 tries)
    would hold a swap for minutes on a black-holed endpoint; the registry bounds both."""
    for _ in range(2):  # the second registry must not see defaults the first one's client changed
        bounded = ModelRegistry("s3://bucket/models")
        bounded.read_active()  # builds the botocore client from the options
        config = bounded._fs.config_kwargs
        assert config["connect_timeout"] == 2
        assert config["retries"] == {"total_max_attempts": 2, "mode": "standard"}
    # ML_API_REGISTRY_STORAGE_OPTIONS replaces a key as a whole, for a slower network.
    patient = ModelRegistry("s3://bucket/models", {"config_kwargs": {"connect_timeout": 10}})
    assert patient._fs.config_kwargs == {"connect_timeout": 10}
    # Local folders take no S3 options.
    assert storage_options_for("registry") == {}
    assert storage_options_for("file:///srv/registry", {"auto_mkdir": True}) == {"auto_mkdir": True}


def test_settings_storage_options_reach_the_services_registry(s3_endpoint: str) -> None:
    options = {"config_kwargs": {"connect_timeout": 7}}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ML_API_REGISTRY_URL", "s3://bucket/models")
        patch.setenv("ML_API_REGISTRY_STORAGE_OPTIONS", json.dumps(options))
        settings = Settings()
    registry = Container(settings=settings).registry()
    assert registry._fs.config_kwargs == {"connect_timeout": 7}
