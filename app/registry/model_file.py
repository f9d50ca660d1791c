"""Model files: skops serialisation with an explicit allow-list of types, and hash checks.

Plain pickle is never used: loading a pickle runs arbitrary code. skops refuses any type that
is not trusted; the types below were reviewed from ``skops.io.get_untrusted_types`` on the
pipelines our training stage builds (scikit-learn trusts its own estimators already).
"""

from __future__ import annotations

import hashlib
from typing import Any

import skops.io as sio

from app.errors import ModelRejected

TRUSTED_TYPES: frozenset[str] = frozenset(
    {
        "numpy.dtype",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    }
)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def untrusted_types(data: bytes) -> list[str]:
    """Types in a skops file that skops does not trust by default."""
    return sorted(sio.get_untrusted_types(data=data))


def dump_model(model: Any) -> bytes:
    """Serialise ``model``; refuse a model the service could not load back."""
    data: bytes = sio.dumps(model)
    refused = [name for name in untrusted_types(data) if name not in TRUSTED_TYPES]
    if refused:
        raise ModelRejected(
            f"model holds types outside the serving allow-list: {', '.join(refused)}; "
            "review them and add them to app.registry.model_file.TRUSTED_TYPES if safe"
        )
    return data


def load_model(data: bytes, *, expected_sha256: str) -> Any:
    """Load a model file only when its hash matches and every type in it is trusted."""
    actual = sha256_hex(data)
    if actual != expected_sha256:
        raise ModelRejected(
            f"model file sha256 {actual[:12]}… does not match the recorded "
            f"{expected_sha256[:12]}…: the file was altered or corrupted"
        )
    try:
        found = untrusted_types(data)
    except Exception as exc:
        raise ModelRejected(f"model file is not a readable skops file: {exc}") from exc
    refused = [name for name in found if name not in TRUSTED_TYPES]
    if refused:
        raise ModelRejected(f"model file holds untrusted types: {', '.join(refused)}")
    try:
        return sio.loads(data, trusted=found)
    except Exception as exc:
        raise ModelRejected(f"model file could not be loaded: {exc}") from exc
