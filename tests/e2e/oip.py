"""Open Inference Protocol request bodies built from /predict rows, for the e2e tests."""

from __future__ import annotations

from typing import Any

from app.registry.meta import FeatureSpec

INFER = "/v2/models/ml-api/infer"


def pandas_request(
    rows: list[dict[str, Any]],
    features: list[FeatureSpec],
    *,
    outputs: list[str] | None = None,
    request_id: str | None = None,
    column_shape: bool = False,
) -> dict[str, Any]:
    """The pandas codec: one input per feature, strings as BYTES, numbers as FP64."""
    inputs = []
    for feature in features:
        values = [row[feature.name] for row in rows]
        inputs.append(
            {
                "name": feature.name,
                "datatype": "BYTES" if feature.dtype == "category" else "FP64",
                "shape": [len(rows), 1] if column_shape else [len(rows)],
                "data": [[v] for v in values] if column_shape else values,
            }
        )
    body: dict[str, Any] = {"parameters": {"content_type": "pd"}, "inputs": inputs}
    if outputs is not None:
        body["outputs"] = [{"name": name} for name in outputs]
    if request_id is not None:
        body["id"] = request_id
    return body


def tensor_request(
    rows: list[dict[str, Any]],
    names: list[str],
    *,
    datatype: str = "FP64",
    nested: bool = False,
    outputs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One 2-D tensor [rows, features], features in ``names`` order."""
    matrix = [[row[name] for name in names] for row in rows]
    body: dict[str, Any] = {
        "inputs": [
            {
                "name": "input-0",
                "datatype": datatype,
                "shape": [len(rows), len(names)],
                "data": matrix if nested else [v for line in matrix for v in line],
            }
        ]
    }
    if outputs is not None:
        body["outputs"] = outputs
    return body


def outputs_by_name(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {output["name"]: output for output in body["outputs"]}


def probabilities_of(body: dict[str, Any]) -> list[list[float]]:
    """predict_proba's flat data back as one list per row."""
    output = outputs_by_name(body)["predict_proba"]
    rows, classes = output["shape"]
    data = output["data"]
    return [data[i * classes : (i + 1) * classes] for i in range(rows)]
