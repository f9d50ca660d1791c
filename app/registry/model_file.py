"""Model files: skops serialisation with an explicit allow-list of types, and hash checks.

Plain pickle is never used: loading a pickle runs arbitrary code. skops refuses any type that
is not trusted; the types below were reviewed from ``skops.io.get_untrusted_types`` on the
pipelines our training stage builds (scikit-learn trusts its own estimators already).
"""

from __future__ import annotations

import hashlib
import zipfile
from typing import Any

import skops.io as sio
from skops.io.exceptions import UntrustedTypesFoundException

from app.errors import ModelRejected
from app.registry.skops_canonical import canonical_skops

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
    """Serialise ``model`` reproducibly (equal models give equal bytes, see
    ``app.registry.skops_canonical``); refuse a model the service could not load back."""
    data = canonical_skops(sio.dumps(model))
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
    # One pass: skops audits every type against the allow-list before it builds anything, so
    # a separate get_untrusted_types() read (a third of a load) would only repeat that audit.
    try:
        return sio.loads(data, trusted=sorted(TRUSTED_TYPES))
    except UntrustedTypesFoundException as exc:
        raise ModelRejected(f"model file holds untrusted types: {exc}") from exc
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ModelRejected(f"model file is not a readable skops file: {exc}") from exc
    except Exception as exc:
        raise ModelRejected(f"model file could not be loaded: {exc}") from exc
