"""Small real classes that stand in for parts in tests (no bare mocks)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from app.errors import ModelRejected
from app.registry.store import ModelRegistry
from app.serving.inputs import Batch, InputLimits
from app.serving.model import LoadedModel, load_verified
from app.serving.runtime import Runtime


class GatedLoader:
    """Loads for real, but only once the test opens the gate: a model that loads slowly."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.gate = threading.Event()

    def __call__(self, registry: ModelRegistry, tag: str, limits: InputLimits) -> LoadedModel:
        self.started.set()
        if not self.gate.wait(timeout=30):
            raise TimeoutError("the test never opened the gate")
        return load_verified(registry, tag, limits)


class RefusingLoader:
    """Refuses one tag as a broken model would be refused; loads the others for real."""

    def __init__(self, refused_tag: str) -> None:
        self.refused_tag = refused_tag

    def __call__(self, registry: ModelRegistry, tag: str, limits: InputLimits) -> LoadedModel:
        if tag == self.refused_tag:
            raise ModelRejected(f"experiment {tag!r}: refused by the test")
        return load_verified(registry, tag, limits)


class CountingLoader:
    """Loads for real and counts loads per tag."""

    def __init__(self) -> None:
        self.loads: dict[str, int] = {}

    def __call__(self, registry: ModelRegistry, tag: str, limits: InputLimits) -> LoadedModel:
        self.loads[tag] = self.loads.get(tag, 0) + 1
        return load_verified(registry, tag, limits)


class FailingRuntime:
    """A runtime whose every call fails, as a model broken on live inputs would."""

    name = "failing"

    def predict_proba(self, batch: Batch) -> np.ndarray[Any, Any]:
        raise RuntimeError("model call failed (by the test)")


class GatedRuntime:
    """Scores for real, but each call waits for the test's gate (a slow model)."""

    def __init__(self, inner: Runtime, gate: threading.Event) -> None:
        self.inner = inner
        self.gate = gate
        self.name = inner.name

    def predict_proba(self, batch: Batch) -> np.ndarray[Any, Any]:
        if not self.gate.wait(timeout=30):
            raise TimeoutError("the test never opened the gate")
        return self.inner.predict_proba(batch)


class RecordingRuntime:
    """Wraps a real runtime: records each call's row count and thread, and can be slow."""

    def __init__(self, inner: Runtime, seconds: float = 0.0) -> None:
        self.inner = inner
        self.name = inner.name
        self.seconds = seconds
        # Timed like the runtime it wraps (by CPU time) unless it sleeps to stand for a slow
        # call, which only wall time sees.
        self.computes_only = seconds == 0 and getattr(inner, "computes_only", False)
        self.calls: list[int] = []
        self.threads: set[int] = set()

    def predict_proba(self, batch: Batch) -> np.ndarray[Any, Any]:
        self.calls.append(batch.n_rows)
        self.threads.add(threading.get_ident())
        time.sleep(self.seconds)  # stands for an expensive model call
        result: np.ndarray[Any, Any] = self.inner.predict_proba(batch)
        return result


class RuntimeSwappingLoader:
    """Loads for real, then gives chosen tags another runtime once loaded (after the load
    checks, which the real runtime passed)."""

    def __init__(
        self, runtimes: dict[str, Callable[[Runtime], Runtime]], inline: bool = False
    ) -> None:
        """``inline``: the wrapped models keep their measured (small) cost and are called on
        the event loop; else they are scored in a thread, like any slow model."""
        self.runtimes = runtimes
        self.inline = inline

    def __call__(self, registry: ModelRegistry, tag: str, limits: InputLimits) -> LoadedModel:
        model = load_verified(registry, tag, limits)
        wrap = self.runtimes.get(tag)
        if wrap is not None:
            model.runtime = wrap(model.runtime)
            if not self.inline:
                model.call_seconds = 0.01
        return model
