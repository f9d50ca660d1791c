"""OIP bodies in and out, without a server: decoding, checks against a schema, encoding."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from app.codecs.oip import (
    FAST_PATH_FROM_BYTES,
    REUSE_UP_TO_BYTES,
    InferenceRequest,
    OipColumns,
    OipTensor,
    RequestedOutput,
    _parser_for,
    decode_inference_request,
    encode_response,
    model_metadata,
    read_inference_request,
)
from app.errors import InvalidInput, MalformedRequest, PayloadTooLarge
from app.registry.meta import FeatureSpec
from app.serving.inputs import InputLimits, InputSchema
from app.serving.model import PredictionResult

NUMERIC = [FeatureSpec(name=n, dtype="float") for n in ("a", "b")] + [
    FeatureSpec(name="n", dtype="int", nullable=True)
]
SCHEMA = InputSchema(NUMERIC, InputLimits(max_rows=3, max_string_length=8))


def tensor(data: list[Any], shape: list[int], datatype: str = "FP64") -> dict[str, Any]:
    return {"inputs": [{"name": "x", "datatype": datatype, "shape": shape, "data": data}]}


@pytest.mark.parametrize(
    "data",
    [
        [1.0, 2.0, 3, 4.0, 5.0, 6],
        [[1.0, 2.0, 3], [4.0, 5.0, 6]],
        [[[1.0], [2.0], [3]], [[4.0], [5.0], [6]]],
    ],
    ids=["flat", "nested", "deeper"],
)
def test_tensor_data_may_be_flat_or_nested(data: list[Any]) -> None:
    request = decode_inference_request(tensor(data, [2, 3]))
    assert isinstance(request.decoded, OipTensor)
    batch = request.decoded.to_batch(SCHEMA)
    assert batch.matrix is not None
    assert batch.matrix.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]


def test_nulls_in_a_tensor_are_checked_per_feature() -> None:
    batch = decode_inference_request(tensor([1.0, 2.0, None], [1, 3])).decoded.to_batch(SCHEMA)
    assert np.isnan(batch.columns["n"][0])
    with pytest.raises(InvalidInput, match="row 0: feature 'a' may not be null"):
        decode_inference_request(tensor([None, 2.0, 3], [1, 3])).decoded.to_batch(SCHEMA)


@pytest.mark.parametrize("value", [1e300, -1e16])
def test_a_float_beyond_the_sane_range_in_a_tensor_is_named(value: float) -> None:
    request = decode_inference_request(tensor([1.0, value, 3], [1, 3]))
    with pytest.raises(InvalidInput, match="row 0: feature 'b' is out of range"):
        request.decoded.to_batch(SCHEMA)


def test_a_number_too_large_for_float64_is_named_not_a_crash() -> None:
    request = decode_inference_request(tensor([10**400, 2.0, 3], [1, 3], "INT64"))
    with pytest.raises(InvalidInput, match="row 0: feature 'a' is out of range"):
        request.decoded.to_batch(SCHEMA)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (tensor([1.5, 2.0, 3.0], [1, 3], "INT32"), "INT32 takes integers, but data[0] is 1.5"),
        (tensor([-1, 2, 3], [1, 3], "UINT8"), "UINT8 takes non-negative integers"),
        (tensor([True, 2.0, 3.0], [1, 3]), "FP64 takes numbers, but data[0] is True"),
        (tensor([1.0, 2.0, 3.0], [1, 3], "BOOL"), "datatype BOOL is not supported"),
        (tensor([1.0, 2.0, 3.0], [3]), "a single tensor must be 2-D [rows, features]"),
        (tensor([1.0, 2.0], [1, 3]), "shape [1, 3] holds 3 values but data has 2"),
        (tensor([1.0, 2.0, 3.0], [1, -3]), "non-negative integers"),
        (tensor(["a", "b", "c"], [1, 3], "BYTES"), "a single tensor must be numeric"),
        ({**tensor([1.0], [1, 1]), "id": 7}, '"id" must be a string'),
        ({**tensor([1.0], [1, 1]), "outputs": [{"name": "proba"}]}, "unknown output 'proba'"),
        (
            {
                **tensor([1.0], [1, 1]),
                "parameters": {"content_type": "np"},
                "inputs": [
                    {"name": "x", "datatype": "FP64", "shape": [1], "data": [1.0]},
                    {"name": "y", "datatype": "FP64", "shape": [1], "data": [1.0]},
                ],
            },
            'with content_type "np": send parameters {"content_type": "pd"}',
        ),
        ([1, 2], "body must be a JSON object"),
    ],
)
def test_malformed_requests_are_named(body: Any, needle: str) -> None:
    with pytest.raises(InvalidInput) as error:
        decode_inference_request(body)
    assert needle in error.value.message
    for raw in (orjson.dumps(body), _large(body)):  # the same words whichever path read it
        with pytest.raises(InvalidInput) as read_error:
            read_inference_request(raw)
        assert read_error.value.message == error.value.message


def _large(body: Any) -> bytes:
    """The body as bytes, padded with JSON whitespace up to the fast path's threshold."""
    return orjson.dumps(body).ljust(FAST_PATH_FROM_BYTES)


def _read_both(body: dict[str, Any]) -> tuple[Any, Any]:
    """The body read from bytes (fast path where it applies) and decoded from orjson's
    document (the general path)."""
    return read_inference_request(_large(body)), decode_inference_request(body)


@pytest.mark.parametrize(
    "body",
    [
        tensor([1.0, 2.0, 3, 4.0, 5.0, 6], [2, 3]),
        tensor([[1.0, 2.0, 3], [4.0, 5.0, 6]], [2, 3], "FP32"),
        tensor([[[1.0], [2], [-0.0]]], [1, 3], "FP16"),
        tensor([2**49, -(2**48) + 0.5, 7], [1, 3]),
        {
            **tensor([0.5, 1.5, 2], [1, 3]),
            "id": "req-1",
            "parameters": {"content_type": "np", "extra": [1, {"k": None}]},
            "outputs": [{"name": "predict_proba", "parameters": {"datatype": "FP32"}}],
        },
    ],
    ids=["flat", "nested-fp32", "deeper-fp16", "large-ints", "id-parameters-outputs"],
)
def test_a_float_tensor_is_read_into_an_array_with_the_same_outcome(body: dict[str, Any]) -> None:
    fast, general = _read_both(body)
    assert isinstance(fast.decoded, OipTensor)
    assert isinstance(general.decoded, OipTensor)
    assert isinstance(fast.decoded.tensor.values, np.ndarray)  # the fast path took it
    assert fast.decoded.tensor.values.flags.writeable
    assert (fast.id, fast.outputs) == (general.id, general.outputs)
    assert fast.decoded.tensor.shape == general.decoded.tensor.shape
    fast_batch, general_batch = (r.decoded.to_batch(SCHEMA) for r in (fast, general))
    assert fast_batch.matrix is not None
    assert general_batch.matrix is not None
    assert np.array_equal(fast_batch.matrix, general_batch.matrix)


@pytest.mark.parametrize(
    "body",
    [
        tensor([1.0, 2.0, None], [1, 3]),
        tensor([1, 2, 3], [1, 3], "INT64"),
        {
            "parameters": {"content_type": "pd"},
            "inputs": [{"name": "a", "datatype": "FP64", "shape": [1], "data": [1.0]}],
        },
    ],
    ids=["null", "integer-datatype", "pandas"],
)
def test_what_the_fast_path_cannot_take_is_read_the_general_way(body: dict[str, Any]) -> None:
    fast, general = _read_both(body)
    assert type(fast.decoded) is type(general.decoded)
    if isinstance(fast.decoded, OipTensor):
        assert isinstance(fast.decoded.tensor.values, list)
        assert fast.decoded.tensor.values == general.decoded.tensor.values


def test_an_integer_beyond_64_bits_is_read_the_general_way() -> None:
    body = _large(tensor([1, 2, 3], [1, 3])).replace(b'"data":[1,', b'"data":[1' + b"0" * 30 + b",")
    request = read_inference_request(body)  # simdjson refuses the number; orjson reads it
    assert isinstance(request.decoded, OipTensor)
    assert isinstance(request.decoded.tensor.values, list)
    with pytest.raises(InvalidInput, match="row 0: feature 'a' is out of range"):
        request.decoded.to_batch(SCHEMA)


def _rows(request: InferenceRequest) -> Any:
    batch = request.decoded.to_batch(SCHEMA)
    assert batch.matrix is not None
    return batch.matrix.tolist()


def _fast(request: InferenceRequest) -> bool:
    """Whether the fast path read the request (its tensor's data is already an array)."""
    assert isinstance(request.decoded, OipTensor)
    return isinstance(request.decoded.tensor.values, np.ndarray)


def test_a_request_read_through_the_shared_parser_outlives_the_next_parse() -> None:
    first = read_inference_request(_large(tensor([1.0, 2.0, 3.0], [1, 3])))
    second = read_inference_request(_large(tensor([7.0, 8.0, 9.0, 10.0, 11.0, 12.0], [2, 3])))
    assert _fast(first)
    assert _fast(second)
    assert _rows(first) == [[1.0, 2.0, 3.0]]
    assert _rows(second) == [[7.0, 8.0, 9.0], [10.0, 11.0, 12.0]]


def test_a_document_still_alive_in_the_shared_parser_only_costs_the_fast_path() -> None:
    """simdjson refuses to reuse a parser while a document of it is referenced; should one
    ever be kept, requests fall back to orjson instead of failing."""
    body = _large(tensor([1.0, 2.0, 3.0], [1, 3]))
    kept = _parser_for(body).parse(body)
    request = read_inference_request(body)
    assert not _fast(request)  # orjson read it
    assert _rows(request) == [[1.0, 2.0, 3.0]]
    del kept
    assert _fast(read_inference_request(body))


def test_a_body_above_the_reuse_bound_gets_a_parser_of_its_own() -> None:
    small = _large(tensor([1.0, 2.0, 3.0], [1, 3]))
    assert _parser_for(small) is _parser_for(small)
    huge = small.ljust(REUSE_UP_TO_BYTES + 1)
    assert _parser_for(huge) is not _parser_for(small)
    assert _fast(read_inference_request(huge))


def test_a_small_body_is_read_by_orjson() -> None:
    request = read_inference_request(orjson.dumps(tensor([1.0, 2.0, 3.0], [1, 3])))
    assert isinstance(request.decoded, OipTensor)
    assert isinstance(request.decoded.tensor.values, list)


@pytest.mark.parametrize("size", [0, FAST_PATH_FROM_BYTES])
def test_a_body_that_is_not_json_is_named(size: int) -> None:
    with pytest.raises(MalformedRequest, match="body is not valid JSON"):
        read_inference_request(b'{"inputs": [1, 2,]}'.ljust(size))


def test_too_many_rows_is_the_schema_limit() -> None:
    request = decode_inference_request(tensor([1.0, 2.0, 3] * 4, [4, 3]))
    with pytest.raises(PayloadTooLarge, match="4 rows is more than the limit of 3"):
        request.decoded.to_batch(SCHEMA)


def test_pandas_columns_take_both_column_shapes() -> None:
    body = {
        "parameters": {"content_type": "pd"},
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [2, 1], "data": [[1.0], [2.0]]},
            {"name": "b", "datatype": "FP64", "shape": [2], "data": [3.0, 4.0]},
            {"name": "n", "datatype": "INT64", "shape": [2], "data": [5, None]},
        ],
    }
    request = decode_inference_request(body)
    assert isinstance(request.decoded, OipColumns)
    batch = request.decoded.to_batch(SCHEMA)
    assert batch.columns["a"].tolist() == [1.0, 2.0]
    assert batch.columns["n"][0] == 5.0


def test_outputs_keep_the_order_asked_and_appear_once() -> None:
    body = {
        **tensor([1.0, 2.0, 3], [1, 3]),
        "outputs": [
            {"name": "predict_proba", "parameters": {"datatype": "FP32"}},
            {"name": "predict"},
            {"name": "predict"},
        ],
    }
    outputs = decode_inference_request(body).outputs
    assert outputs == (RequestedOutput("predict_proba", "FP32"), RequestedOutput("predict"))


def test_response_carries_labels_and_probabilities_by_row() -> None:
    probabilities = np.array([[0.2, 0.8], [0.9, 0.1]])
    result = PredictionResult("tag-1", ["no", "yes"], probabilities)
    body = encode_response(
        result,
        model_name="m",
        request_id="r",
        outputs=(RequestedOutput("predict"), RequestedOutput("predict_proba", "FP32")),
    )
    assert (body["model_name"], body["model_version"], body["id"]) == ("m", "tag-1", "r")
    labels, probas = body["outputs"]
    assert labels["data"] == ["yes", "no"]
    assert labels["shape"] == [2]
    assert probas["shape"] == [2, 2]
    assert probas["datatype"] == "FP32"
    assert probas["data"].dtype == np.float32
    assert probas["data"].tolist() == pytest.approx([0.2, 0.8, 0.9, 0.1])
    assert probas["parameters"] == {"classes": ["no", "yes"]}


def test_metadata_says_whether_one_tensor_is_taken() -> None:
    numeric = model_metadata("m", NUMERIC, ["no", "yes"], versions=["t"], runtime="onnx")
    assert numeric["parameters"]["tensor_input"] is True
    assert [i["datatype"] for i in numeric["inputs"]] == ["FP64", "FP64", "INT64"]
    mixed = [*NUMERIC, FeatureSpec(name="c", dtype="category", categories=["x"])]
    metadata = model_metadata("m", mixed, ["no", "yes"], versions=["t"], runtime="sklearn")
    assert metadata["parameters"]["tensor_input"] is False
    assert metadata["inputs"][-1]["parameters"]["categories"] == ["x"]
