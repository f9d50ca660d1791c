"""Small real classes that stand in for parts in tests (no bare mocks)."""

from __future__ import annotations

import threading

from app.errors import ModelRejected
from app.registry.store import ModelRegistry
from app.serving.inputs import InputLimits
from app.serving.model import LoadedModel, load_verified


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
