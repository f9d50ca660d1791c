from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import threadpoolctl

from app.errors import ModelRejected
from app.registry.store import ModelRegistry
from app.serving.inputs import InputLimits
from app.serving.model import load_verified
from app.serving.runtime import OnnxRuntime, SklearnRuntime
from app.settings import Settings
from tests.conftest import ADMIN_TOKEN, app_client
from tests.models import model_frame, sample_rows, trained

LIMITS = InputLimits(max_rows=1000, max_string_length=256)


def without_onnx(registry_dir: Path, tag: str) -> None:
    """Make ``tag`` look as published when its conversion failed: no ONNX copy, a note."""
    path = registry_dir / "experiments" / tag / "meta.json"
    meta = json.loads(path.read_text())
    meta["onnx"] = {"status": "failed", "tolerance": 1e-4, "note": "not convertible (test)"}
    path.write_text(json.dumps(meta))


def test_publish_records_the_onnx_check(registry: ModelRegistry) -> None:
    for tag in ("base", "boost"):
        info = registry.read_meta(tag).onnx
        assert info is not None
        assert info.status == "ok", info.note
        assert info.max_abs_diff is not None
        assert info.tolerance is not None
        assert info.max_abs_diff <= info.tolerance
        assert info.checked_rows >= 8
    logreg = registry.read_meta("base").onnx
    assert logreg is not None
    assert logreg.tolerance == 1e-4


def test_auto_serves_onnx_when_it_passed_and_sklearn_otherwise(
    registry: ModelRegistry, registry_dir: Path
) -> None:
    assert isinstance(load_verified(registry, "base", LIMITS).runtime, OnnxRuntime)
    assert isinstance(load_verified(registry, "boost", LIMITS).runtime, OnnxRuntime)
    forced = load_verified(registry, "base", LIMITS, runtime="sklearn")
    assert isinstance(forced.runtime, SklearnRuntime)
    without_onnx(registry_dir, "boost")
    assert isinstance(load_verified(registry, "boost", LIMITS).runtime, SklearnRuntime)


def test_onnx_runtime_refuses_a_model_without_onnx(
    registry: ModelRegistry, registry_dir: Path
) -> None:
    without_onnx(registry_dir, "boost")
    with pytest.raises(ModelRejected, match="no usable ONNX"):
        load_verified(registry, "boost", LIMITS, runtime="onnx")


def test_onnx_and_sklearn_agree_on_every_row(registry: ModelRegistry) -> None:
    rows = sample_rows(344)  # includes rows with missing values
    model = load_verified(registry, "base", LIMITS, runtime="onnx")
    batch = model.schema.rows_to_batch(rows)
    expected = trained("logreg").predict_proba(model_frame(rows))
    got = model.predict_proba(batch)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert np.array_equal(got.argmax(axis=1), expected.argmax(axis=1))


def test_tampered_onnx_file_is_refused(registry: ModelRegistry, registry_dir: object) -> None:
    from pathlib import Path

    onnx_file = Path(str(registry_dir)) / "experiments" / "base" / "model.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes() + b"x")
    with pytest.raises(ModelRejected, match="ONNX file sha256"):
        load_verified(registry, "base", LIMITS)


def native_threads() -> dict[str, int]:
    """Threads of each OpenMP/BLAS pool loaded in this process, keyed by library file."""
    return {pool["filepath"]: pool["num_threads"] for pool in threadpoolctl.threadpool_info()}


@pytest.mark.parametrize("threads", [1, 2])
async def test_each_worker_caps_native_threads_while_it_serves(
    settings: Settings, threads: int
) -> None:
    """ML_API_MODEL_THREADS holds for the worker's life; the caller's pools come back after."""
    with threadpoolctl.threadpool_limits(limits=3):  # what a process had before serving
        before = native_threads()
        assert any(pool["internal_api"] == "openmp" for pool in threadpoolctl.threadpool_info())
        # runtime=sklearn: HistGradientBoosting then scores with OpenMP (not ONNX Runtime).
        serving = settings.model_copy(update={"model_threads": threads, "runtime": "sklearn"})
        async with app_client(serving) as http:
            assert set(native_threads().values()) == {threads}
            # The model serves under the cap: HistGradientBoosting scores with OpenMP.
            swap = await http.post(
                "/replace_ml_model",
                json={"tag": "boost"},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
            assert swap.status_code == 200
            predicted = await http.post("/predict", json={"instances": sample_rows(3)})
            assert predicted.status_code == 200
            assert set(native_threads().values()) == {threads}
        assert native_threads() == before
