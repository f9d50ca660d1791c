from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import threadpoolctl
from sklearn.pipeline import Pipeline

from app.errors import ModelRejected
from app.registry.store import ModelRegistry
from app.serving.inputs import InputLimits, InputSchema
from app.serving.model import load_verified
from app.serving.runtime import OnnxRuntime, SklearnRuntime, limit_native_threads
from app.settings import Settings
from tests.conftest import ADMIN_TOKEN, app_client
from tests.models import features, model_frame, sample_rows, trained

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


def openmp_threads() -> int:
    """omp_get_max_threads() of the calling thread: OpenMP's cap is per thread."""
    (pool,) = [p for p in threadpoolctl.threadpool_info() if p["internal_api"] == "openmp"]
    return int(pool["num_threads"])


def test_the_cap_holds_in_a_thread_that_did_not_set_it() -> None:
    """A scikit-learn model called from another thread (an AnyIO worker, a model pool) scores
    under the cap too, not under OpenMP's default of one thread per core."""
    model = SklearnRuntime(trained("hgb"), features())
    batch = InputSchema.unlimited(features()).rows_to_batch(sample_rows(2))
    seen: list[int] = []

    def score() -> None:
        model.predict_proba(batch)
        seen.append(openmp_threads())

    restore = limit_native_threads(1)
    try:
        for _ in range(2):  # two fresh threads
            thread = threading.Thread(target=score)
            thread.start()
            thread.join()
    finally:
        restore()
    assert seen == [1, 1]


@pytest.mark.parametrize("threads", [1, 2])
async def test_every_thread_that_runs_a_model_is_capped_across_swaps(
    settings: Settings, threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loads and requests of a scikit-learn model run in worker threads: each must score
    under ML_API_MODEL_THREADS. Uncapped, each such thread keeps its own OpenMP team of one
    thread per core; from the second team on, libgomp stops spin-waiting (more OpenMP threads
    than cores) and a 300-tree model paid a sleep and wake-up per tree: issue 14 saw single
    rows go from 8 ms at start-up to 55 ms after swapping away and back."""
    calls: list[tuple[int, int]] = []
    predict_proba = Pipeline.predict_proba

    def recording(self: Pipeline, x: Any) -> Any:
        calls.append((threading.get_ident(), openmp_threads()))
        return predict_proba(self, x)

    monkeypatch.setattr(Pipeline, "predict_proba", recording)
    serving = settings.model_copy(update={"model_threads": threads, "runtime": "sklearn"})
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with app_client(serving) as http:
        for tag in ("boost", "base", "boost"):
            swap = await http.post("/replace_ml_model", json={"tag": tag}, headers=auth)
            assert swap.status_code == 200
            for _ in range(3):
                predicted = await http.post("/predict", json={"instances": sample_rows(1)})
                assert predicted.status_code == 200
    assert {ident for ident, _ in calls} - {threading.get_ident()}  # worker threads scored
    assert {limit for _, limit in calls} == {threads}
