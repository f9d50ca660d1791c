"""Open Inference Protocol (OIP, "v2") REST bodies: an InferenceRequest in, an InferenceResponse
out, and the model metadata that tells a client how to call.

A tabular request arrives in one of two forms:

* the **pandas codec** of MLServer and KServe (request ``parameters.content_type: "pd"``): one
  input per feature column, named after the feature, shape ``[rows]`` or ``[rows, 1]``,
  strings as ``BYTES``, numbers as ``FP*``/``INT*``/``UINT*``, ``null`` for a missing value;
* **one 2-D numeric tensor** ``[rows, features]`` (no content type, or ``"np"``), for
  all-numeric models, columns in the order of the model metadata's inputs; ``data`` flat or
  nested, as the specification allows.

Decoding checks only what needs no model (structure, datatype against data, shape against
data length, content type, requested outputs); :meth:`OipColumns.to_batch` and
:meth:`OipTensor.to_batch` then check the rows against the serving model's schema with the
same rules, limits and messages as ``/predict``. Numbers are read as sent (float64): an
``FP32`` input is not rounded to single precision, so the model sees what ``/predict`` would.

:func:`read_inference_request` parses a body. A single ``FP*`` tensor of plain numbers, the
common numeric request, has its data parsed by simdjson straight into a float64 buffer: on a
100-row request the 3,000 Python floats that orjson makes, their type check and the array
built from them cost more than everything else the service does before the model. Every other
body of that size is turned into Python objects from the same parse (orjson reads the smaller
ones, and those simdjson refuses), and every body is checked the general way, so what a client
is told never depends on the path.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import simdjson

from app.codecs.json_rows import parse_json
from app.errors import InvalidInput
from app.registry.meta import FeatureSpec
from app.serving.inputs import Batch, InputSchema, describe
from app.serving.model import PredictionResult

PANDAS = "pd"
NUMPY = "np"
LABELS = "predict"
PROBABILITIES = "predict_proba"
OUTPUTS = (LABELS, PROBABILITIES)

FLOATS = frozenset({"FP16", "FP32", "FP64"})
INTEGERS = frozenset({"INT8", "INT16", "INT32", "INT64"})
UNSIGNED = frozenset({"UINT8", "UINT16", "UINT32", "UINT64"})
NUMERIC = FLOATS | INTEGERS | UNSIGNED
DATATYPES = NUMERIC | {"BYTES", "BOOL"}
FEATURE_DATATYPE = {"float": "FP64", "int": "INT64", "category": "BYTES"}

_NUMBER_TYPES = frozenset({int, float, type(None)})
_STRING_TYPES = frozenset({str, type(None)})
_MAX_NESTING = 8


def _bad(message: str, reason: str = "malformed_body") -> InvalidInput:
    return InvalidInput(message, reason=reason)


def _row(index: int) -> str:
    return f"row {index}"


# -- inputs ------------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorInput:
    """One ``inputs`` entry, its data flattened in row-major order and type-checked."""

    name: str
    datatype: str
    shape: list[int]
    values: list[Any] | np.ndarray[Any, Any]  # an array only from the float fast path
    has_nulls: bool

    def listed(self) -> list[Any]:
        """The values as Python objects, for the per-value checks."""
        values = self.values
        return values.tolist() if isinstance(values, np.ndarray) else values


@dataclass(frozen=True)
class OipColumns:
    """Pandas codec: one input per feature column."""

    inputs: dict[str, TensorInput]
    n_rows: int

    def ignored(self, schema: InputSchema) -> list[str]:
        return []  # an input no feature takes is an error, named by the schema

    def to_batch(self, schema: InputSchema) -> Batch:
        for feature in schema.features:
            given = self.inputs.get(feature.name)
            if given is not None:
                _check_feature_datatype(feature, given)
        columns = {name: given.listed() for name, given in self.inputs.items()}
        return schema.columns_to_batch(columns, self.n_rows, _row, "inputs")


@dataclass(frozen=True)
class OipTensor:
    """One 2-D numeric tensor ``[rows, features]``, features in the schema's order."""

    tensor: TensorInput

    def ignored(self, schema: InputSchema) -> list[str]:
        return []

    def to_batch(self, schema: InputSchema) -> Batch:
        categorical = schema.categorical
        if categorical:
            raise _bad(
                f"input {self.tensor.name!r}: this model has categorical features "
                f"({', '.join(categorical)}), so it takes no single numeric tensor: send one "
                f'input per feature with parameters {{"content_type": "{PANDAS}"}}',
                "content_type",
            )
        rows, width = self.tensor.shape
        if width != len(schema.names):
            raise _bad(
                f"input {self.tensor.name!r}: expected shape [rows, {len(schema.names)}] "
                f"(features in the order {', '.join(schema.names)}), got {self.tensor.shape}",
                "shape_mismatch",
            )
        values = self.tensor.values
        if not self.tensor.has_nulls:
            try:
                matrix = np.asarray(values, dtype=np.float64).reshape(rows, width)
            except OverflowError:  # an integer beyond float64: the per-value walk names it
                pass
            else:
                return schema.matrix_to_batch(matrix, _row)
        listed = self.tensor.listed()
        columns = {name: listed[i::width] for i, name in enumerate(schema.names)}
        return schema.columns_to_batch(columns, rows, _row, "inputs")


def _check_feature_datatype(feature: FeatureSpec, given: TensorInput) -> None:
    if feature.dtype == "category" and given.datatype != "BYTES":
        raise _bad(
            f"input {given.name!r}: feature {feature.name!r} is categorical and takes BYTES "
            f"(strings), got datatype {given.datatype}",
            "wrong_datatype",
        )
    if feature.dtype != "category" and given.datatype not in NUMERIC:
        raise _bad(
            f"input {given.name!r}: feature {feature.name!r} is numeric and takes FP32, FP64 "
            f"or INT*, got datatype {given.datatype}",
            "wrong_datatype",
        )


# -- outputs -----------------------------------------------------------------------------
@dataclass(frozen=True)
class RequestedOutput:
    name: str
    datatype: str = "FP64"  # of predict_proba: FP64 or FP32


ALL_OUTPUTS = (RequestedOutput(LABELS), RequestedOutput(PROBABILITIES))


@dataclass(frozen=True)
class InferenceRequest:
    """A decoded OIP request: its id, its rows (not yet checked against a model), the
    outputs asked for."""

    id: str | None
    decoded: OipColumns | OipTensor
    outputs: tuple[RequestedOutput, ...]


# Below this many bytes (about eight 30-feature rows) orjson and the general checks are as fast.
FAST_PATH_FROM_BYTES = 4096


def read_inference_request(body: bytes) -> InferenceRequest:
    """Parse and decode an InferenceRequest body (see the module's note on the fast path)."""
    document = _simdjson_document(body) if len(body) >= FAST_PATH_FROM_BYTES else None
    return decode_inference_request(parse_json(body) if document is None else document)


# A parser keeps its buffers between documents. One per thread: a document is only valid until
# its parser parses the next, and nothing parsed leaves _simdjson_document as a simdjson object.
# Bodies above REUSE_UP_TO_BYTES get a parser of their own, so one huge request does not pin
# its buffers for the life of the worker.
REUSE_UP_TO_BYTES = 1 << 20
_parsers = threading.local()


def _parser_for(body: bytes) -> simdjson.Parser:
    if len(body) > REUSE_UP_TO_BYTES:
        return simdjson.Parser()
    parser: simdjson.Parser | None = getattr(_parsers, "parser", None)
    if parser is None:
        parser = _parsers.parser = simdjson.Parser()
    return parser


def _simdjson_document(body: bytes) -> Any:
    """The body as Python objects, a single ``FP*`` tensor's data (numbers only, nested or
    flat) already a float64 array; None when simdjson cannot read it (orjson names why)."""
    try:
        document = _parser_for(body).parse(body)
    except (ValueError, RuntimeError):  # not JSON, or an integer beyond 64 bits
        return None
    with_array = _with_float_array(document)
    return _plain(document) if with_array is None else with_array


def _with_float_array(document: Any) -> dict[str, Any] | None:
    if not isinstance(document, simdjson.Object):
        return None
    # A key is looked up only once it is known to be there: simdjson answers a missing key
    # with a C++ exception, whose unwinding cost more than the rest of this function.
    keys = set(document)
    if "parameters" in keys:
        parameters = document["parameters"]
        if (
            isinstance(parameters, simdjson.Object)
            and "content_type" in set(parameters)
            and parameters["content_type"] == PANDAS
        ):
            return None
    if "inputs" not in keys:
        return None
    inputs = document["inputs"]
    if not isinstance(inputs, simdjson.Array) or len(inputs) != 1:
        return None
    tensor = inputs[0]
    if not isinstance(tensor, simdjson.Object):
        return None
    tensor_keys = set(tensor)
    if "datatype" not in tensor_keys or "data" not in tensor_keys:
        return None
    data = tensor["data"]
    if tensor["datatype"] not in FLOATS or not isinstance(data, simdjson.Array):
        return None
    try:  # flattens nesting; refuses nulls, strings and booleans
        buffer = data.as_buffer(of_type="d")
    except (TypeError, ValueError, RuntimeError):
        return None
    # By key: items() would unbox every value, the data too.
    plain = {key: _plain(document[key]) for key in document if key != "inputs"}
    given = {key: _plain(tensor[key]) for key in tensor if key != "data"}
    given["data"] = np.frombuffer(buffer, dtype=np.float64).copy()  # writable, like the rest
    plain["inputs"] = [given]
    return plain


def _plain(value: Any) -> Any:
    """A simdjson value as the Python objects orjson would have made."""
    if isinstance(value, simdjson.Object):
        return value.as_dict()
    if isinstance(value, simdjson.Array):
        return value.as_list()
    return value


def decode_inference_request(document: Any) -> InferenceRequest:
    """Check an already parsed InferenceRequest body as far as it goes without a model."""
    if not isinstance(document, dict):
        raise _bad('body must be a JSON object: an InferenceRequest with an "inputs" list')
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise _bad(f'"id" must be a string, got {describe(request_id)}')
    parameters = document.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise _bad('"parameters" must be an object')
    content_type = (parameters or {}).get("content_type")
    raw_inputs = document.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise _bad('"inputs" must be a non-empty list of input tensors')
    inputs = [_tensor_input(raw, index) for index, raw in enumerate(raw_inputs)]
    outputs = _requested_outputs(document.get("outputs"))
    if content_type == PANDAS:
        return InferenceRequest(request_id, _columns(inputs), outputs)
    if content_type is None or content_type == NUMPY:
        return InferenceRequest(request_id, _tensor(inputs, content_type), outputs)
    raise _bad(
        f"parameters.content_type {describe(content_type)} is not supported: use "
        f'"{PANDAS}" (one input per feature column) or "{NUMPY}"/none (one 2-D numeric tensor)',
        "content_type",
    )


def _tensor_input(raw: Any, index: int) -> TensorInput:
    where = f"inputs[{index}]"
    if not isinstance(raw, dict):
        raise _bad(f"{where} must be an object with name, shape, datatype and data")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise _bad(f'{where}: "name" must be a non-empty string')
    where = f"input {describe(name)}"
    datatype = raw.get("datatype")
    if datatype not in DATATYPES:
        raise _bad(
            f"{where}: datatype {describe(datatype)} is not an OIP datatype "
            f"({', '.join(sorted(DATATYPES))})",
            "wrong_datatype",
        )
    if datatype == "BOOL":
        raise _bad(
            f"{where}: datatype BOOL is not supported: features take numbers (FP32, FP64, "
            "INT*) or strings (BYTES)",
            "wrong_datatype",
        )
    shape = raw.get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(type(d) is int and d >= 0 for d in shape)
    ):
        raise _bad(f'{where}: "shape" must be a non-empty list of non-negative integers')
    data = raw.get("data")
    values: list[Any] | np.ndarray[Any, Any]
    kinds: set[type]
    if isinstance(data, np.ndarray):  # from the float fast path: flat, numbers only
        values, kinds = data, {float}
    elif isinstance(data, list):
        kinds = set(map(type, data))  # one C-level pass; bool is its own type, not int's
        values = data
        if list in kinds:
            values = _flatten(data, where)
            kinds = set(map(type, values))
    else:
        raise _bad(f'{where}: "data" must be a list (flat or nested, row-major)')
    expected = math.prod(shape)
    if len(values) != expected:
        raise _bad(
            f"{where}: shape {shape} holds {expected} values but data has {len(values)}",
            "shape_mismatch",
        )
    _check_data(where, datatype, values, kinds)
    return TensorInput(name, datatype, shape, values, type(None) in kinds)


def _flatten(data: list[Any], where: str, depth: int = 0) -> list[Any]:
    """Nested data (the tensor's natural shape) in row-major order."""
    if set(map(type, data)) == {list} and depth + 1 < _MAX_NESTING:
        level = list(itertools.chain.from_iterable(data))  # one level, in C
        return _flatten(level, where, depth + 1) if list in set(map(type, level)) else level
    if depth >= _MAX_NESTING:
        raise _bad(f"{where}: data is nested more than {_MAX_NESTING} levels deep")
    flat: list[Any] = []
    for value in data:
        if type(value) is list:
            flat.extend(_flatten(value, where, depth + 1))
        else:
            flat.append(value)
    return flat


def _check_data(
    where: str, datatype: str, values: list[Any] | np.ndarray[Any, Any], kinds: set[type]
) -> None:
    """Every element fits the declared datatype (nulls are left to the schema); ``kinds`` is
    the set of the values' types."""
    if datatype == "BYTES":
        if kinds <= _STRING_TYPES:
            return
        index, value = next((i, v) for i, v in enumerate(values) if type(v) not in _STRING_TYPES)
        raise _bad(
            f"{where}: datatype BYTES takes strings, but data[{index}] is {describe(value)}",
            "wrong_datatype",
        )
    if not kinds <= _NUMBER_TYPES:
        index, value = next((i, v) for i, v in enumerate(values) if type(v) not in _NUMBER_TYPES)
        raise _bad(
            f"{where}: datatype {datatype} takes numbers, but data[{index}] is {describe(value)}",
            "wrong_datatype",
        )
    if datatype in FLOATS:
        return
    for index, value in enumerate(values):
        if value is None:
            continue
        if (type(value) is float and not value.is_integer()) or (
            datatype in UNSIGNED and value < 0
        ):
            kind = "non-negative integers" if datatype in UNSIGNED else "integers"
            raise _bad(
                f"{where}: datatype {datatype} takes {kind}, but data[{index}] is "
                f"{describe(value)}",
                "wrong_datatype",
            )


def _columns(inputs: list[TensorInput]) -> OipColumns:
    by_name: dict[str, TensorInput] = {}
    n_rows: int | None = None
    first = ""
    for given in inputs:
        if given.name in by_name:
            raise _bad(f"input {describe(given.name)} is given twice")
        if len(given.shape) > 2 or (len(given.shape) == 2 and given.shape[1] != 1):
            raise _bad(
                f'input {describe(given.name)}: with content_type "{PANDAS}" each input is '
                f"one feature column of shape [rows] or [rows, 1], got {given.shape}",
                "shape_mismatch",
            )
        rows = given.shape[0]
        if n_rows is None:
            n_rows, first = rows, given.name
        elif rows != n_rows:
            raise _bad(
                f"input {describe(given.name)} has {rows} rows but input {describe(first)} "
                f"has {n_rows}: every column needs one value per row",
                "shape_mismatch",
            )
        by_name[given.name] = given
    assert n_rows is not None
    return OipColumns(by_name, n_rows)


def _tensor(inputs: list[TensorInput], content_type: str | None) -> OipTensor:
    if len(inputs) > 1:
        names = ", ".join(describe(given.name) for given in inputs[:5])
        told = "no parameters.content_type" if content_type is None else f'content_type "{NUMPY}"'
        raise _bad(
            f"{len(inputs)} inputs ({names}) with {told}: send parameters "
            f'{{"content_type": "{PANDAS}"}} for one input per feature column, or a single '
            "2-D numeric tensor [rows, features]",
            "content_type",
        )
    (tensor,) = inputs
    if tensor.datatype not in NUMERIC:
        raise _bad(
            f"input {describe(tensor.name)}: a single tensor must be numeric (FP32, FP64), got "
            f'{tensor.datatype}; for string features send parameters {{"content_type": '
            f'"{PANDAS}"}} with one input per feature',
            "content_type",
        )
    if len(tensor.shape) != 2:
        raise _bad(
            f"input {describe(tensor.name)}: a single tensor must be 2-D [rows, features], got "
            f"shape {tensor.shape}; for one input per feature column send parameters "
            f'{{"content_type": "{PANDAS}"}}',
            "content_type",
        )
    return OipTensor(tensor)


def _requested_outputs(raw: Any) -> tuple[RequestedOutput, ...]:
    if raw is None or raw == []:
        return ALL_OUTPUTS
    if not isinstance(raw, list):
        raise _bad('"outputs" must be a list of {"name": ...} objects')
    chosen: dict[str, RequestedOutput] = {}
    for index, item in enumerate(raw):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            raise _bad(f'outputs[{index}] must be an object with a string "name"')
        if name not in OUTPUTS:
            raise _bad(
                f"unknown output {describe(name)}: this model has the outputs "
                f'"{LABELS}" (labels) and "{PROBABILITIES}" (class probabilities)',
                "unknown_output",
            )
        parameters = item.get("parameters") or {}
        datatype = parameters.get("datatype", "FP64") if isinstance(parameters, dict) else None
        if name == PROBABILITIES and datatype not in ("FP64", "FP32"):
            raise _bad(
                f'outputs[{index}]: parameters.datatype of "{PROBABILITIES}" must be "FP64" '
                f'or "FP32", got {describe(datatype)}',
                "unknown_output",
            )
        chosen.setdefault(name, RequestedOutput(name, datatype or "FP64"))
    return tuple(chosen.values())


# -- response ----------------------------------------------------------------------------
def encode_response(
    result: PredictionResult,
    *,
    model_name: str,
    request_id: str,
    outputs: Sequence[RequestedOutput],
) -> dict[str, Any]:
    """The InferenceResponse; ``predict_proba`` data stays a numpy array (serialise with
    ``orjson.OPT_SERIALIZE_NUMPY``)."""
    rows = int(result.probabilities.shape[0])
    encoded: list[dict[str, Any]] = []
    for output in outputs:
        if output.name == LABELS:
            encoded.append(
                {
                    "name": LABELS,
                    "datatype": "BYTES",
                    "shape": [rows],
                    "data": result.labels,
                    "parameters": {"content_type": "str"},
                }
            )
        else:
            dtype = np.float32 if output.datatype == "FP32" else np.float64
            encoded.append(
                {
                    "name": PROBABILITIES,
                    "datatype": output.datatype,
                    "shape": [rows, len(result.classes)],
                    "data": np.ascontiguousarray(result.probabilities, dtype=dtype).ravel(),
                    "parameters": {"classes": result.classes},
                }
            )
    return {
        "model_name": model_name,
        "model_version": result.model_tag,
        "id": request_id,
        "outputs": encoded,
    }


# -- metadata ----------------------------------------------------------------------------
def model_metadata(
    name: str,
    features: Sequence[FeatureSpec],
    classes: Sequence[str],
    *,
    versions: Sequence[str],
    runtime: str,
) -> dict[str, Any]:
    """The MetadataModelResponse: one input per feature (the pandas codec), in the order an
    all-numeric model's single tensor takes them, and the two outputs."""
    inputs = []
    for feature in features:
        parameters: dict[str, Any] = {"content_type": PANDAS, "nullable": feature.nullable}
        if feature.categories is not None:
            parameters["categories"] = list(feature.categories)
        inputs.append(
            {
                "name": feature.name,
                "datatype": FEATURE_DATATYPE[feature.dtype],
                "shape": [-1, 1],
                "parameters": parameters,
            }
        )
    return {
        "name": name,
        "versions": list(versions),
        "platform": "sklearn",
        "inputs": inputs,
        "outputs": [
            {"name": LABELS, "datatype": "BYTES", "shape": [-1]},
            {
                "name": PROBABILITIES,
                "datatype": "FP64",
                "shape": [-1, len(classes)],
                "parameters": {"classes": list(classes)},
            },
        ],
        "parameters": {
            "content_type": PANDAS,
            "tensor_input": all(f.dtype != "category" for f in features),
            "runtime": runtime,
        },
    }
