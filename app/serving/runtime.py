"""Runtimes that score a validated batch: scikit-learn (DataFrame or array) and ONNX Runtime.

Per-call overhead, not arithmetic, dominates single-row latency: a scikit-learn pipeline with
a ColumnTransformer costs milliseconds per call on a one-row DataFrame, ONNX Runtime tens of
microseconds. Each runtime takes the batch's column arrays as directly as it can.
"""

from __future__ import annotations

import ctypes
import gc
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np
import threadpoolctl

from app.registry.meta import FeatureSpec
from app.serving.inputs import Batch

T = TypeVar("T")

# The cap limit_native_threads set for this process, and the cap each thread has applied.
_model_threads: int | None = None
_this_thread = threading.local()


def limit_native_threads(threads: int) -> Callable[[], None]:
    """Cap the OpenMP and BLAS thread pools of this process; returns what restores them.

    Each worker is a process: with every library's default (one thread per core) two workers
    loading or scoring a HistGradientBoosting model at once oversubscribe the cores and the
    spinning OpenMP threads turn a 65 ms load into seconds. Throughput scales with workers.

    OpenMP's limit belongs to the thread that sets it, and models are loaded and called in
    worker threads: :class:`SklearnRuntime` applies the same cap, once, in each thread that
    calls a model (:func:`ensure_thread_limit`).
    """
    global _model_threads
    limiter = threadpoolctl.threadpool_limits(limits=threads)
    _model_threads = threads
    _this_thread.threads = threads

    def restore() -> None:
        global _model_threads
        _model_threads = None
        _this_thread.threads = None
        limiter.restore_original_limits()

    return restore


def release_memory() -> None:
    """Collect unreachable objects, then hand the heap's free pages back to the system.

    glibc keeps freed memory in its arenas (one per thread that allocated), so a worker's RSS
    would stay at its peak after models are unloaded; ``malloc_trim`` returns it.
    """
    gc.collect()
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to trim
        return
    libc.malloc_trim(0)


def ensure_thread_limit() -> None:
    """Apply the process's cap to the calling thread's OpenMP limit, once per thread.

    Uncapped, every thread that scores a HistGradientBoosting model keeps its own OpenMP team
    of one thread per core. From the second team on, libgomp counts more OpenMP threads than
    cores and stops spin-waiting between parallel regions (one region per tree), so each tree
    costs its worker a sleep and a wake-up (about 800 per single-row call of a 300-tree model):
    issue 14 saw single rows go from 8 ms to 55 ms after a swap away and back. BLAS limits are
    process-wide and already set.
    """
    threads = _model_threads
    if threads is not None and getattr(_this_thread, "threads", None) != threads:
        threadpoolctl.threadpool_limits(limits=threads, user_api="openmp")
        _this_thread.threads = threads


def run_with_thread_limit(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in this thread under the process's native-thread cap."""
    ensure_thread_limit()
    return function(*args)


class Runtime(Protocol):
    name: str

    def predict_proba(self, batch: Batch) -> np.ndarray[Any, Any]: ...


class SklearnRuntime:
    """A fitted scikit-learn estimator. A DataFrame is built only when the estimator was fitted
    on named columns; an all-numeric model fitted on arrays gets one 2-D float array."""

    name = "sklearn"
    # Only computes (no I/O, no waits): the batcher may time its calls by CPU time.
    computes_only = True

    def __init__(self, estimator: Any, features: Sequence[FeatureSpec]) -> None:
        self._estimator = estimator
        self._names = [f.name for f in features]
        self._by_name = getattr(estimator, "feature_names_in_", None) is not None
        if not self._by_name and any(f.dtype == "category" for f in features):
            raise ValueError("a model with categorical inputs must be fitted on named columns")

    def predict_proba(self, batch: Batch) -> np.ndarray[Any, Any]:
        ensure_thread_limit()
        if self._by_name:
            data: Any = batch.to_frame()
        elif batch.matrix is not None:
            data = batch.matrix
        else:
            data = np.column_stack([batch.columns[name] for name in self._names])
        return np.asarray(self._estimator.predict_proba(data))


class OnnxRuntime:
    """An ONNX graph converted from the same pipeline at publish time and checked there
    against scikit-learn (labels identical, probabilities within tolerance)."""

    name = "onnx"
    computes_only = True  # as SklearnRuntime's

    def __init__(self, model_bytes: bytes, features: Sequence[FeatureSpec]) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # One request is small: threads cost more to wake than they save, and workers scale
        # across cores instead.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            model_bytes, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._features = list(features)
        names = [i.name for i in self._session.get_inputs()]
        # One 2-D input means the pipeline was fitted on an array: feed the stacked columns.
        self._stacked_input = names[0] if len(names) == 1 and len(features) > 1 else None
        outputs = [o.name for o in self._session.get_outputs()]
        self._probabilities = "probabilities" if "probabilities" in outputs else outputs[-1]

    def predict_proba(self, batch: Batch) -> np.ndarray[Any, Any]:
        if self._stacked_input is not None:
            stacked = batch.matrix
            if stacked is None:
                stacked = np.column_stack([batch.columns[f.name] for f in self._features])
            feed = {self._stacked_input: stacked.astype(np.float32)}
            (probabilities,) = self._session.run([self._probabilities], feed)
            return np.asarray(probabilities, dtype=np.float64)
        feed = {}
        for feature in self._features:
            column = batch.columns[feature.name]
            if feature.dtype == "category":
                feed[feature.name] = column.astype(str).reshape(-1, 1)
            else:
                feed[feature.name] = column.astype(np.float32).reshape(-1, 1)
        (probabilities,) = self._session.run([self._probabilities], feed)
        return np.asarray(probabilities, dtype=np.float64)
