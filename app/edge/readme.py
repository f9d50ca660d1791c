"""The README of an edge bundle: what is in it, how to check it, and a runnable example that
needs only onnxruntime and numpy."""

from __future__ import annotations

from typing import Any

# The bundle's example.py, shown in its README too; tests run it as it is written here.
EXAMPLE = '''\
import json

import numpy as np
import onnxruntime as ort

with open("model.json", encoding="utf-8") as handle:
    bundle = json.load(handle)
session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
features = {feature["name"]: feature for feature in bundle["features"]}
classes = bundle["classes"]


def encode(feature, value):
    """A missing value (None) is "" for a category and NaN for a number."""
    if value is None:
        return "" if feature["dtype"] == "category" else float("nan")
    return value


def predict(rows):
    """rows: a list of {feature: value}; returns the labels and class probabilities."""
    feed = {}
    for spec in bundle["inputs"]:
        values = [[encode(features[n], row.get(n)) for n in spec["features"]] for row in rows]
        dtype = object if spec["element_type"] == "string" else np.float32
        feed[spec["name"]] = np.array(values, dtype=dtype)
    (probabilities,) = session.run([bundle["outputs"]["probabilities"]["name"]], feed)
    labels = [classes[i] for i in probabilities.argmax(axis=1)]
    return labels, probabilities


if __name__ == "__main__":
    reference = bundle["reference"]
    labels, probabilities = predict(reference["instances"])
    assert labels == reference["labels"], labels
    assert np.allclose(probabilities, reference["probabilities"], atol=1e-5)
    print("reference rows reproduced:", labels)
'''

TEMPLATE = """\
# Edge bundle of experiment `{tag}`

The model `{tag}` ({model_type}) as an ONNX graph that runs offline with
[onnxruntime](https://onnxruntime.ai) alone: no ml-api, no scikit-learn. Published
{created_at}.

- `model.onnx`: the ONNX copy the service serves, verified at publish time against the
  scikit-learn model, and at export against its sha256 and the reference rows.
- `model.json`: inputs, outputs, classes, how missing values are encoded, and the reference
  rows with the service's answers.
- `README.md`: this file; `example.py`: the example below.
- `SHA256SUMS`: the sha256 of every other file; check with `sha256sum -c SHA256SUMS`.

## Inputs

{inputs}

Missing values: `""` for a category, NaN for a number (features with `nullable: false` are
refused by the service when missing). A category not seen in training is accepted (its one-hot
columns are all zero). Classes, in the order of the probability columns:
{classes}.

The label is the class with the highest probability, exactly as the service computes it.

## Run it

```bash
pip install onnxruntime numpy
python example.py   # checks the reference rows; import it and call predict(rows) for yours
```

```python
{example}```
"""


def render(description: dict[str, Any]) -> str:
    inputs = "\n".join(
        f"- `{spec['name']}`: {spec['element_type']} tensor of shape "
        f"[{', '.join('rows' if d is None else str(d) for d in spec['shape'])}], carrying "
        f"{', '.join(f'`{name}`' for name in spec['features'])}"
        for spec in description["inputs"]
    )
    return TEMPLATE.format(
        tag=description["tag"],
        model_type=description["model_type"],
        created_at=description["created_at"],
        inputs=inputs,
        classes=", ".join(f"`{name}`" for name in description["classes"]),
        example=EXAMPLE,
    )


def example_code(readme: str) -> str:
    """The Python example of a rendered README."""
    start = readme.index("```python\n") + len("```python\n")
    return readme[start : readme.index("```", start)]
