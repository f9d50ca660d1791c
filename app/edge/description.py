"""``model.json`` of an edge bundle: what the ONNX graph takes and gives, in plain JSON.

Inputs are the graph's own (one ``[rows, 1]`` tensor per feature, strings for categories and
float32 for numbers; or one stacked float32 ``[rows, features]`` tensor for models fitted on
arrays), each naming the features it carries in order. A missing value is encoded as the
service encodes it: ``""`` for a category, NaN for a number.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import onnx
import onnxruntime

from app.registry.meta import MISSING_CATEGORY, ExperimentMeta

FORMAT = "ml-api-edge-bundle"
FORMAT_VERSION = 1
MODEL_FILE = "model.onnx"
DESCRIPTION_FILE = "model.json"

_ELEMENT_TYPES = {
    "tensor(string)": "string",
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
}


def _shape(dims: list[Any]) -> list[int | None]:
    return [dim if isinstance(dim, int) else None for dim in dims]


def _element(kind: str) -> str:
    return _ELEMENT_TYPES.get(kind, kind)


def describe(
    meta: ExperimentMeta, model_bytes: bytes, model_sha256: str, probabilities: np.ndarray[Any, Any]
) -> dict[str, Any]:
    """The description of ``meta``'s ONNX copy; ``probabilities`` are the verified model's
    answers on the reference rows, for a device to check itself against."""
    session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    graph_inputs = session.get_inputs()
    names = [feature.name for feature in meta.features]
    stacked = len(graph_inputs) == 1 and len(names) > 1
    inputs = [
        {
            "name": node.name,
            "element_type": _element(node.type),
            "shape": _shape(node.shape),
            "features": names if stacked else [node.name],
        }
        for node in graph_inputs
    ]
    outputs = {node.name: node for node in session.get_outputs()}
    probability_name = "probabilities" if "probabilities" in outputs else list(outputs)[-1]
    label_name = "label" if "label" in outputs else next(iter(outputs))
    opsets = {
        entry.domain or "ai.onnx": int(entry.version)
        for entry in onnx.load_model_from_string(model_bytes).opset_import
    }
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tag": meta.tag,
        "model_type": meta.model_type,
        "created_at": meta.created_at.isoformat(),
        "exported_at": datetime.now(UTC).isoformat(),
        "git_commit": meta.git_commit,
        "model": {
            "file": MODEL_FILE,
            "sha256": model_sha256,
            "opsets": opsets,
            "checked_with": {"onnxruntime": onnxruntime.__version__},
            "source_model_sha256": meta.model_sha256,
        },
        "features": [
            {
                "name": feature.name,
                "dtype": feature.dtype,
                "categories": feature.categories,
                "nullable": feature.nullable,
                "missing_value": MISSING_CATEGORY if feature.dtype == "category" else "NaN",
            }
            for feature in meta.features
        ],
        "inputs": inputs,
        "outputs": {
            "label": {
                "name": label_name,
                "element_type": _element(outputs[label_name].type),
                "shape": _shape(outputs[label_name].shape),
            },
            "probabilities": {
                "name": probability_name,
                "element_type": _element(outputs[probability_name].type),
                "shape": _shape(outputs[probability_name].shape),
                "columns": list(meta.classes),
            },
        },
        "classes": list(meta.classes),
        "missing_values": {"category": MISSING_CATEGORY, "number": "NaN"},
        "reference": {
            "instances": meta.reference.instances,
            "labels": meta.reference.labels,
            "probabilities": probabilities.tolist(),
        },
    }
