"""The Open Inference Protocol (v2) endpoints of a real ``ml-api serve``: metadata, readiness,
inference with both codecs and both outputs, pinned versions, the repository extension (hot
swap, unload) and every error in the protocol's shape, naming the fault."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.registry.store import ModelRegistry
from tests.e2e.oip import (
    INFER,
    outputs_by_name,
    pandas_request,
    probabilities_of,
    tensor_request,
)
from tests.e2e.server import Server, auth_headers
from tests.models import NUMERIC, features, publish_numeric, sample_rows

pytestmark = pytest.mark.e2e

MAX_ROWS = 50
MAX_BYTES = 100_000
ROWS = sample_rows(5)  # row 3 has every value missing (nulls through the pandas codec)
FEATURES = features()


@pytest.fixture(scope="module")
def server(seed_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``base`` serving, ``boost`` published; small limits to reach them cheaply."""
    registry = tmp_path_factory.mktemp("oip") / "registry"
    shutil.copytree(seed_registry, registry)
    env = {"ML_API_MAX_ROWS": str(MAX_ROWS), "ML_API_MAX_UPLOAD_BYTES": str(MAX_BYTES)}
    with Server(str(registry), env=env) as running:
        yield running


@pytest.fixture(scope="module")
def numeric_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An all-numeric model, which also takes one 2-D tensor."""
    root = tmp_path_factory.mktemp("oip-numeric") / "registry"
    registry = ModelRegistry(str(root))
    publish_numeric(registry, "numeric")
    registry.write_active("numeric", updated_by="test", previous_tag=None)
    with Server(str(root)) as running:
        yield running


@pytest.fixture(scope="module")
def managed(seed_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose deployment the tests change (each starts from ``base`` alone)."""
    registry = tmp_path_factory.mktemp("oip-managed") / "registry"
    shutil.copytree(seed_registry, registry)
    with Server(str(registry)) as running:
        yield running


@pytest.fixture
def managed_http(managed: Server) -> Iterator[httpx.Client]:
    with managed.client() as client:
        reset = client.put("/deployment", json={"primary": "base"}, headers=auth_headers())
        assert reset.status_code == 200, reset.text
        yield client


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def predict(http: httpx.Client, rows: list[dict[str, Any]]) -> dict[str, Any]:
    answer = http.post("/predict", json={"instances": rows})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def flat(rows: list[list[float]]) -> list[float]:
    return [value for row in rows for value in row]


def assert_oip_error(answer: httpx.Response, status: int, needle: str) -> str:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert list(body) == ["error"], body
    assert isinstance(body["error"], str), body
    assert needle in body["error"], body["error"]
    return str(body["error"])


# -- metadata and health ----------------------------------------------------------------------
def test_server_metadata_names_the_server_and_the_repository_extension(
    http: httpx.Client,
) -> None:
    body = http.get("/v2").json()
    assert body == {"name": "ml-api", "version": "0.1.0", "extensions": ["model_repository"]}


@pytest.mark.parametrize("path", ["/v2/models/ml-api", "/v2/models/ml-api/versions/base"])
def test_model_metadata_describes_features_outputs_and_loaded_versions(
    http: httpx.Client, path: str
) -> None:
    body = http.get(path).json()
    assert body["name"] == "ml-api"
    assert body["versions"] == ["base"]
    assert body["platform"] == "sklearn"
    inputs = {tensor["name"]: tensor for tensor in body["inputs"]}
    assert [tensor["name"] for tensor in body["inputs"]] == [f.name for f in FEATURES]
    assert inputs["island"]["datatype"] == "BYTES"
    assert inputs["island"]["parameters"]["categories"] == ["Biscoe", "Dream", "Torgersen"]
    assert inputs["bill_length_mm"]["datatype"] == "FP64"
    assert all(tensor["shape"] == [-1, 1] for tensor in body["inputs"])
    outputs = {tensor["name"]: tensor for tensor in body["outputs"]}
    assert outputs["predict"] == {"name": "predict", "datatype": "BYTES", "shape": [-1]}
    assert outputs["predict_proba"]["shape"] == [-1, 3]
    assert outputs["predict_proba"]["parameters"]["classes"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert body["parameters"]["tensor_input"] is False  # it has categorical features


def test_model_and_version_readiness(http: httpx.Client) -> None:
    assert http.get("/v2/models/ml-api/ready").status_code == 200
    assert http.get("/v2/models/ml-api/versions/base/ready").status_code == 200
    assert_oip_error(http.get("/v2/models/other/ready"), 404, "'other' not found")
    # boost is published but not loaded: not a version one can call
    assert_oip_error(http.get("/v2/models/ml-api/versions/boost/ready"), 404, "'boost'")


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("/v2/models/other", "model 'other' not found: this server serves the model 'ml-api'"),
        ("/v2/models/other/infer", "model 'other' not found"),
        ("/v2/models/ml-api/versions/boost", "version 'boost' of model 'ml-api' is not loaded"),
        ("/v2/models/ml-api/versions/nope/infer", "'nope' is not loaded"),
    ],
)
def test_unknown_model_or_unloaded_version_is_404_in_the_oip_shape(
    http: httpx.Client, path: str, needle: str
) -> None:
    if path.endswith("/infer"):
        answer = http.post(path, json=pandas_request(ROWS, FEATURES))
    else:
        answer = http.get(path)
    assert_oip_error(answer, 404, needle)


# -- inference ---------------------------------------------------------------------------------
@pytest.mark.parametrize("column_shape", [False, True], ids=["shape-rows", "shape-rows-1"])
def test_pandas_codec_answers_what_predict_answers(http: httpx.Client, column_shape: bool) -> None:
    answer = http.post(INFER, json=pandas_request(ROWS, FEATURES, column_shape=column_shape))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_name"] == "ml-api"
    assert body["model_version"] == "base"
    outputs = outputs_by_name(body)
    assert list(outputs) == ["predict", "predict_proba"]  # both when none is asked for
    labels = outputs["predict"]
    assert (labels["datatype"], labels["shape"]) == ("BYTES", [len(ROWS)])
    probabilities = outputs["predict_proba"]
    assert probabilities["datatype"] == "FP64"
    assert probabilities["shape"] == [len(ROWS), 3]
    assert probabilities["parameters"]["classes"] == ["Adelie", "Chinstrap", "Gentoo"]

    ours = predict(http, ROWS)
    assert labels["data"] == [row["label"] for row in ours["predictions"]]
    expected = [list(row["probabilities"].values()) for row in ours["predictions"]]
    assert flat(probabilities_of(body)) == pytest.approx(flat(expected), abs=1e-12)


@pytest.mark.parametrize(
    ("asked", "names"),
    [
        (["predict"], ["predict"]),
        (["predict_proba"], ["predict_proba"]),
        (["predict_proba", "predict"], ["predict_proba", "predict"]),
    ],
)
def test_outputs_are_chosen_per_request(
    http: httpx.Client, asked: list[str], names: list[str]
) -> None:
    answer = http.post(INFER, json=pandas_request(ROWS, FEATURES, outputs=asked))
    assert answer.status_code == 200, answer.text
    assert [output["name"] for output in answer.json()["outputs"]] == names


def test_request_id_is_echoed_else_the_x_request_id(http: httpx.Client) -> None:
    given = http.post(INFER, json=pandas_request(ROWS[:1], FEATURES, request_id="order 42/a"))
    assert given.json()["id"] == "order 42/a"
    header = http.post(
        INFER, json=pandas_request(ROWS[:1], FEATURES), headers={"X-Request-ID": "trace-7"}
    )
    assert header.json()["id"] == "trace-7"
    assert header.headers["X-Request-ID"] == "trace-7"


def test_oip_requests_are_counted_under_their_route_template(
    http: httpx.Client, server: Server
) -> None:
    def served() -> float:
        text = http.get("/metrics").text
        marker = 'ml_api_http_requests_total{handler="/v2/models/{name}/infer",method="POST"'
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(marker) and 'status="200"' in line
        )

    before = served()
    assert http.post(INFER, json=pandas_request(ROWS[:1], FEATURES)).status_code == 200
    assert served() == before + 1


def test_tensor_codec_on_an_all_numeric_model(numeric_server: Server) -> None:
    rows = [{name: r[name] for name in NUMERIC} for r in sample_rows(6) if r["sex"] is not None]
    with numeric_server.client() as http:
        metadata = http.get("/v2/models/ml-api").json()
        assert metadata["parameters"]["tensor_input"] is True
        order = [tensor["name"] for tensor in metadata["inputs"]]
        ours = predict(http, rows)
        expected = [list(row["probabilities"].values()) for row in ours["predictions"]]
        labels = [row["label"] for row in ours["predictions"]]
        for nested in (False, True):
            answer = http.post(INFER, json=tensor_request(rows, order, nested=nested))
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert outputs_by_name(body)["predict"]["data"] == labels
            assert flat(probabilities_of(body)) == pytest.approx(flat(expected), abs=1e-12)
        single = http.post(
            INFER,
            json=tensor_request(
                rows,
                order,
                datatype="FP32",
                outputs=[{"name": "predict_proba", "parameters": {"datatype": "FP32"}}],
            ),
        ).json()
        (output,) = single["outputs"]
        assert output["datatype"] == "FP32"
        assert flat(probabilities_of(single)) == pytest.approx(flat(expected), abs=1e-6)
        # the same rows through the pandas codec
        columns = pandas_request(rows, [f for f in FEATURES if f.name in NUMERIC])
        assert outputs_by_name(http.post(INFER, json=columns).json())["predict"]["data"] == labels
        # a missing value in a feature that may not be null is named
        broken = tensor_request(rows, order)
        broken["inputs"][0]["data"][1] = None
        assert_oip_error(
            http.post(INFER, json=broken), 400, f"row 0: feature {order[1]!r} may not be null"
        )
        wide = tensor_request(rows, [*order, order[0]])
        assert_oip_error(http.post(INFER, json=wide), 400, "expected shape [rows, 4]")


# -- errors ------------------------------------------------------------------------------------
def _with(body: dict[str, Any], index: int, **changes: Any) -> dict[str, Any]:
    body["inputs"][index] = {**body["inputs"][index], **changes}
    return body


def _without(body: dict[str, Any], name: str) -> dict[str, Any]:
    body["inputs"] = [given for given in body["inputs"] if given["name"] != name]
    return body


def _island() -> int:
    return [f.name for f in FEATURES].index("island")


def _bill() -> int:
    return [f.name for f in FEATURES].index("bill_length_mm")


ERRORS: dict[str, tuple[Callable[[], dict[str, Any]], str]] = {
    "datatype-not-oip": (
        lambda: _with(pandas_request(ROWS, FEATURES), _bill(), datatype="FLOAT"),
        "input 'bill_length_mm': datatype 'FLOAT' is not an OIP datatype",
    ),
    "datatype-not-matching-data": (
        lambda: _with(pandas_request(ROWS, FEATURES), _bill(), data=["long", 1.0, 2.0, 3.0, 4.0]),
        "input 'bill_length_mm': datatype FP64 takes numbers, but data[0] is 'long'",
    ),
    "bytes-with-numbers": (
        lambda: _with(pandas_request(ROWS, FEATURES), _island(), data=[1, 2, 3, 4, 5]),
        "input 'island': datatype BYTES takes strings, but data[0] is 1",
    ),
    "datatype-not-for-the-feature": (
        lambda: _with(pandas_request(ROWS, FEATURES), _island(), datatype="FP64", data=[1.0] * 5),
        "feature 'island' is categorical and takes BYTES (strings), got datatype FP64",
    ),
    "integer-datatype-with-fraction": (
        lambda: _with(pandas_request(ROWS, FEATURES), _bill(), datatype="INT64"),
        "input 'bill_length_mm': datatype INT64 takes integers, but data[0] is 39.1",
    ),
    "shape-not-matching-data": (
        lambda: _with(pandas_request(ROWS, FEATURES), _bill(), shape=[6]),
        "input 'bill_length_mm': shape [6] holds 6 values but data has 5",
    ),
    "columns-of-different-length": (
        lambda: _with(
            pandas_request(ROWS, FEATURES), _bill(), shape=[4], data=[1.0, 2.0, 3.0, 4.0]
        ),
        "input 'bill_length_mm' has 4 rows but input 'island' has 5",
    ),
    "missing-column": (
        lambda: _without(pandas_request(ROWS, FEATURES), "sex"),
        "inputs: missing feature(s) 'sex'",
    ),
    "unknown-column": (
        lambda: {
            **(body := pandas_request(ROWS, FEATURES)),
            "inputs": [
                *body["inputs"],
                {"name": "colour", "datatype": "BYTES", "shape": [5], "data": ["x"] * 5},
            ],
        },
        "inputs: unknown feature(s) 'colour'",
    ),
    "wrong-content-type": (
        lambda: {**pandas_request(ROWS, FEATURES), "parameters": {"content_type": "str"}},
        "parameters.content_type 'str' is not supported",
    ),
    "absent-content-type-with-columns": (
        lambda: {**pandas_request(ROWS, FEATURES), "parameters": {}},
        'with no parameters.content_type: send parameters {"content_type": "pd"}',
    ),
    "tensor-for-a-model-with-categories": (
        lambda: tensor_request(ROWS[:1], NUMERIC),
        "this model has categorical features (island, sex)",
    ),
    "unknown-output": (
        lambda: pandas_request(ROWS, FEATURES, outputs=["predict", "predict_log_proba"]),
        "unknown output 'predict_log_proba'",
    ),
    "bytes-for-a-numeric-feature": (
        lambda: _with(pandas_request(ROWS, FEATURES), _bill(), datatype="BYTES", data=["1"] * 5),
        "feature 'bill_length_mm' is numeric and takes FP32, FP64 or INT*, got datatype BYTES",
    ),
    "too-many-rows": (
        lambda: pandas_request(sample_rows(MAX_ROWS + 1), FEATURES),
        f"{MAX_ROWS + 1} rows is more than the limit of {MAX_ROWS} (ML_API_MAX_ROWS)",
    ),
    "no-inputs": (lambda: {"inputs": []}, '"inputs" must be a non-empty list'),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_bad_request_is_400_in_the_oip_shape_naming_the_fault(
    http: httpx.Client, case: str
) -> None:
    build, needle = ERRORS[case]
    assert_oip_error(http.post(INFER, json=build()), 400, needle)


def test_too_many_rows_has_the_message_of_predict(http: httpx.Client) -> None:
    rows = sample_rows(MAX_ROWS + 1)
    ours = http.post("/predict", json={"instances": rows})
    assert ours.status_code == 413
    message = assert_oip_error(http.post(INFER, json=pandas_request(rows, FEATURES)), 400, "")
    assert message == ours.json()["error"]["message"]


def test_no_such_oip_path_or_method_answers_in_the_oip_shape(http: httpx.Client) -> None:
    assert_oip_error(http.get(INFER), 405, "Method Not Allowed")
    assert_oip_error(http.post("/v2/models/ml-api/generate", json={}), 404, "Not Found")


def test_body_that_is_not_json_is_400(http: httpx.Client) -> None:
    answer = http.post(INFER, content=b"{not json", headers={"Content-Type": "application/json"})
    assert_oip_error(answer, 400, "body is not valid JSON")


def test_body_over_the_byte_limit_is_413_in_the_oip_shape(http: httpx.Client) -> None:
    answer = http.post(INFER, content=b" " * (MAX_BYTES + 1))
    assert_oip_error(answer, 413, f"larger than {MAX_BYTES} bytes")


def _chunks(body: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_a_body_streamed_in_chunks_is_read_whole(http: httpx.Client) -> None:
    body = orjson.dumps(pandas_request(ROWS, FEATURES, request_id="streamed"))
    whole = http.post(INFER, content=body, headers={"Content-Type": "application/json"})
    streamed = http.post(
        INFER, content=_chunks(body, 97), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in streamed.request.headers  # sent chunked
    assert streamed.status_code == whole.status_code == 200, streamed.text
    assert streamed.json() == whole.json()


def test_a_streamed_body_over_the_byte_limit_is_413_in_the_oip_shape(http: httpx.Client) -> None:
    answer = http.post(INFER, content=_chunks(b" " * (MAX_BYTES + 1), 8192))
    assert "content-length" not in answer.request.headers
    assert_oip_error(answer, 413, f"larger than {MAX_BYTES} bytes")


# -- versions, experiments and the repository extension ------------------------------------------
def test_a_loaded_candidate_of_a_split_can_be_pinned_and_unloaded(
    managed_http: httpx.Client,
) -> None:
    http = managed_http
    spec = {"primary": "base", "candidates": [{"tag": "boost", "weight": 50}]}
    changed = http.put("/deployment", json=spec, headers=auth_headers())
    assert changed.status_code == 200, changed.text
    assert http.get("/v2/models/ml-api").json()["versions"] == ["base", "boost"]
    for tag in ("boost", "base"):
        for _ in range(5):
            answer = http.post(
                f"/v2/models/ml-api/versions/{tag}/infer", json=pandas_request(ROWS, FEATURES)
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["model_version"] == tag
    index = {entry["name"]: entry for entry in http.post("/v2/repository/index").json()}
    assert index["base"]["state"] == index["boost"]["state"] == "READY"
    assert index["base"]["reason"] == "primary: 50 % of requests"
    assert index["boost"]["reason"] == "candidate: 50 % of requests"

    unload = "/v2/repository/models/{}/unload"
    assert_oip_error(http.post(unload.format("boost")), 401, "missing bearer token")
    assert_oip_error(
        http.post(unload.format("base"), headers=auth_headers()), 409, "is the primary"
    )
    answer = http.post(unload.format("boost"), headers=auth_headers())
    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "UNAVAILABLE"
    assert_oip_error(
        http.post("/v2/models/ml-api/versions/boost/infer", json=pandas_request(ROWS, FEATURES)),
        404,
        "'boost' is not loaded",
    )
    assert http.get("/deployment", headers=auth_headers()).json()["spec"]["candidates"] == []
    assert_oip_error(
        http.post(unload.format("boost"), headers=auth_headers()), 404, "not in the deployment"
    )


def test_repository_load_is_a_hot_swap_behind_the_admin_token(
    managed_http: httpx.Client,
) -> None:
    http = managed_http
    index = http.post("/v2/repository/index", json={}).json()
    assert {(e["name"], e["state"]) for e in index} == {
        ("base", "READY"),
        ("boost", "UNAVAILABLE"),
    }
    assert [e["name"] for e in http.post("/v2/repository/index", json={"ready": True}).json()] == [
        "base"
    ]
    load = "/v2/repository/models/boost/load"
    assert_oip_error(http.post(load), 401, "missing bearer token")
    wrong = {"Authorization": "Bearer wrong-token-0123456789"}
    assert_oip_error(http.post(load, headers=wrong), 401, "invalid bearer token")
    assert_oip_error(
        http.post("/v2/repository/models/nope/load", headers=auth_headers()), 404, "nope"
    )
    assert_oip_error(
        http.post("/v2/repository/models/bad.tag/load", headers=auth_headers()),
        400,
        "invalid experiment tag",
    )
    answer = http.post(load, headers=auth_headers())
    assert answer.status_code == 200, answer.text
    assert answer.json()["primary"] == "boost"
    served = http.post(INFER, json=pandas_request(ROWS, FEATURES)).json()
    assert served["model_version"] == "boost"
    assert http.get("/v2/models/ml-api").json()["versions"] == ["boost"]
    states = {e["name"]: e["state"] for e in http.post("/v2/repository/index").json()}
    assert states == {"base": "UNAVAILABLE", "boost": "READY"}
