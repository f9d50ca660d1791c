"""Exporting an experiment as an edge bundle, refusing any model without a verified ONNX copy.

Checks before anything is written: the experiment has an ONNX copy that publishing verified
(``meta.onnx.status == "ok"``), the file's sha256 matches ``meta.json``, and the service's
own load path (:func:`load_verified` with the ONNX runtime) accepts it, reproducing the
reference labels. The bundle is written into a new or empty folder.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from app.edge.description import DESCRIPTION_FILE, MODEL_FILE, describe
from app.edge.readme import EXAMPLE, render
from app.errors import ExportRefused, ModelRejected
from app.registry.model_file import sha256_hex
from app.registry.store import ModelRegistry
from app.serving.inputs import InputLimits, InputSchema
from app.serving.model import has_verified_onnx, load_verified
from app.settings import Settings

README_FILE = "README.md"
EXAMPLE_FILE = "example.py"
SUMS_FILE = "SHA256SUMS"


@dataclass(frozen=True)
class Bundle:
    tag: str
    files: dict[str, str]  # file name -> sha256


def export_bundle(settings: Settings, outdir: str | Path, tag: str) -> Bundle:
    """Write the bundle of ``tag`` into ``outdir`` (created; must be empty if it exists)."""
    registry = ModelRegistry(settings.registry_url, settings.registry_storage_options)
    meta = registry.read_meta(tag)
    onnx = meta.onnx
    if onnx is None or not has_verified_onnx(meta):
        status = "no ONNX copy was published" if onnx is None else f"ONNX status {onnx.status}"
        note = ""
        if onnx is not None and onnx.note:
            first = onnx.note.splitlines()[0]
            note = f": {first[:200]}{'...' if len(first) > 200 else ''}"
        raise ExportRefused(
            f"experiment {tag!r} has no verified ONNX copy ({status}{note}); only a copy "
            "proven to give the service's predictions is exported"
        )
    data = registry.read_file(tag, str(onnx.file))
    sha = sha256_hex(data)
    if sha != onnx.sha256:
        raise ExportRefused(f"experiment {tag!r}: {onnx.file} does not match its sha256")
    limits = InputLimits(max_rows=sys.maxsize, max_string_length=settings.max_string_length)
    try:
        model = load_verified(registry, tag, limits, runtime="onnx")
    except ModelRejected as exc:
        message = f"experiment {tag!r} fails the service's checks: {exc.message}"
        raise ExportRefused(message) from exc
    batch = InputSchema.unlimited(meta.features).rows_to_batch(meta.reference.instances)
    description = describe(meta, data, sha, model.predict_proba(batch))
    target = Path(outdir)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ExportRefused(f"{target} exists and is not an empty folder")
    target.mkdir(parents=True, exist_ok=True)
    contents = {
        MODEL_FILE: data,
        DESCRIPTION_FILE: (json.dumps(description, indent=2) + "\n").encode(),
        README_FILE: render(description).encode(),
        EXAMPLE_FILE: EXAMPLE.encode(),
    }
    files = {name: sha256_hex(content) for name, content in contents.items()}
    contents[SUMS_FILE] = "".join(f"{digest}  {name}\n" for name, digest in files.items()).encode()
    for name, content in contents.items():
        (target / name).write_bytes(content)
    return Bundle(tag=tag, files=files)
