"""ml-api against what others wrote: the official OIP OpenAPI document (schemathesis, and its
schemas checked on real answers) and an OIP client from PyPI that no one here wrote.

The document is MLServer's ``mlserver/rest/openapi/dataplane.json``, read at run time out of
the pinned ``mlserver==1.7.1`` wheel (sha256 checked; nothing of it is committed). Deliberate
deviations, all in :func:`served_part`:

* the ``infer_stream``, ``generate`` and ``generate_stream`` operations are dropped: ml-api does
  not serve them (they are MLServer extensions for streaming and LLMs, not in KServe's
  required API);
* ``TensorData`` is ``oneOf: [{type: array}, {type: bytes}]``, and ``bytes`` is no JSON Schema
  type (no tool can generate or check it): it becomes ``{type: array}``, which is what REST
  data is in KServe's required_api.md;
* path parameters are pinned to the model ml-api serves (``ml-api``) and a loaded version
  (``base``): the document documents only 200 for the ready endpoints, while the protocol
  answers a 4xx for an unknown model (tested in test_oip.py).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from open_inference.openapi.client import OpenInferenceClient
from open_inference.openapi.core.api_error import ApiError
from open_inference.openapi.types import InferenceRequest, RequestInput, RequestOutput, TensorData
from openapi_schema_validator import OAS30Validator

from tests.e2e.oip import INFER, outputs_by_name, pandas_request, probabilities_of
from tests.e2e.server import Server
from tests.models import features, sample_rows

pytestmark = pytest.mark.e2e

MLSERVER = "mlserver==1.7.1"
MLSERVER_WHEEL_SHA256 = "d2ac7502915bb5311343a878aa1fb614f9b0f2436ee550a6137c1872a4dca193"
DATAPLANE = "mlserver/rest/openapi/dataplane.json"
NOT_SERVED = ("/infer_stream", "/generate", "/generate_stream")
CHECKS = [
    "not_a_server_error",
    "response_schema_conformance",
    "status_code_conformance",
    "content_type_conformance",
]
SEED = 20261129
FEATURES = features()
# Complete rows: the client's TensorData takes no nulls.
ROWS = [row for row in sample_rows(12) if None not in row.values()][:6]


@pytest.fixture(scope="session")
def official_dataplane(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The OIP OpenAPI document as MLServer ships it, from the pinned wheel."""
    cache = getattr(pytestconfig, "cache", None)
    folder = cache.mkdir("oip-openapi") if cache is not None else tmp_path_factory.mktemp("oip")
    wheels = sorted(folder.glob("mlserver-1.7.1-*.whl"))
    if not wheels:
        subprocess.run(
            [
                *(sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"),
                *("--quiet", "--dest", str(folder), MLSERVER),
            ],
            check=True,
            timeout=180,
        )
        wheels = sorted(folder.glob("mlserver-1.7.1-*.whl"))
    data = wheels[0].read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert digest == MLSERVER_WHEEL_SHA256, f"{wheels[0].name}: sha256 {digest}, not the pinned one"
    with zipfile.ZipFile(io.BytesIO(data)) as wheel:
        document: dict[str, Any] = json.loads(wheel.read(DATAPLANE))
    return document


def served_part(document: dict[str, Any]) -> dict[str, Any]:
    """The official document less what ml-api deliberately does not do (module docstring)."""
    served = copy.deepcopy(document)
    served["paths"] = {
        path: item for path, item in served["paths"].items() if not path.endswith(NOT_SERVED)
    }
    served["components"]["schemas"]["TensorData"] = {"title": "TensorData", "type": "array"}
    return served


@pytest.fixture(scope="module")
def server(seed_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    registry = tmp_path_factory.mktemp("oip-interop") / "registry"
    shutil.copytree(seed_registry, registry)
    with Server(str(registry)) as running:
        yield running


@pytest.mark.timeout(300)
def test_schemathesis_on_the_official_oip_document_finds_nothing(
    server: Server, official_dataplane: dict[str, Any], tmp_path: Path
) -> None:
    (tmp_path / "dataplane.json").write_text(json.dumps(served_part(official_dataplane)))
    (tmp_path / "schemathesis.toml").write_text(
        '[parameters]\n"path.model_name" = "ml-api"\n"path.model_version" = "base"\n'
    )
    st = Path(sys.executable).parent / "st"
    run = subprocess.run(
        [
            *(str(st), "--config-file", "schemathesis.toml", "run", "dataplane.json"),
            *("--url", server.url, "--checks", ",".join(CHECKS), "--max-examples", "30"),
            *("--seed", str(SEED), "--workers", "1", "--request-timeout", "20", "--no-color"),
        ],
        cwd=tmp_path,  # its hypothesis database stays out of the project
        capture_output=True,
        text=True,
        timeout=270,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "9 selected / 9 total" in run.stdout  # health, metadata, ready, infer
    assert "passed" in run.stdout


def _conforms(document: dict[str, Any], component: str, instance: Any) -> None:
    schema = {"$ref": f"#/components/schemas/{component}", "components": document["components"]}
    errors = [error.message for error in OAS30Validator(schema).iter_errors(instance)]
    assert errors == [], f"{component}: {errors}"


def test_valid_answers_conform_to_the_official_schemas(
    server: Server, official_dataplane: dict[str, Any]
) -> None:
    """Random bodies rarely make a valid request, so the 200 answers are checked here."""
    document = served_part(official_dataplane)
    with server.client() as http:
        _conforms(document, "MetadataServerResponse", http.get("/v2").json())
        _conforms(document, "MetadataModelResponse", http.get("/v2/models/ml-api").json())
        missing = http.get("/v2/models/other")
        assert missing.status_code == 404
        _conforms(document, "MetadataModelErrorResponse", missing.json())
        answer = http.post(INFER, json=pandas_request(ROWS, FEATURES, request_id="r-1"))
        assert answer.status_code == 200
        _conforms(document, "InferenceResponse", answer.json())
        bad = http.post(INFER, json=pandas_request(ROWS, FEATURES, outputs=["nope"]))
        assert bad.status_code == 400
        _conforms(document, "InferenceErrorResponse", bad.json())
        assert list(bad.json()) == ["error"]


def _client_request(rows: list[dict[str, Any]]) -> InferenceRequest:
    """The pandas codec, spelled with the client's own types."""
    inputs = [
        RequestInput(
            name=feature.name,
            shape=[len(rows), 1],
            datatype="BYTES" if feature.dtype == "category" else "FP64",
            data=TensorData(__root__=[row[feature.name] for row in rows]),
            parameters=None,
        )
        for feature in FEATURES
    ]
    return InferenceRequest(
        id="client-1",
        parameters={"content_type": "pd"},
        inputs=inputs,
        outputs=[
            RequestOutput(name="predict", parameters=None),
            RequestOutput(name="predict_proba", parameters=None),
        ],
    )


def test_open_inference_client_drives_ml_api_unchanged(server: Server) -> None:
    with httpx.Client(timeout=30) as transport:  # closed afterwards; the client never closes it
        _drive(OpenInferenceClient(base_url=server.url, httpx_client=transport), server.url)


def _drive(client: OpenInferenceClient, url: str) -> None:
    client.check_server_liveness()
    client.check_server_readiness()
    client.check_model_readiness("ml-api")
    client.check_model_version_readiness("ml-api", "base")

    server_metadata = client.read_server_metadata()
    assert server_metadata.name == "ml-api"
    assert "model_repository" in server_metadata.extensions
    metadata = client.read_model_metadata("ml-api")
    assert metadata.versions == ["base"]
    assert metadata.inputs is not None
    assert [tensor.name for tensor in metadata.inputs] == [f.name for f in FEATURES]
    with pytest.raises(ApiError) as missing:
        client.read_model_metadata("not-ml-api")
    assert missing.value.status_code == 404
    assert "'not-ml-api' not found" in missing.value.body["error"]

    response = client.model_infer("ml-api", request=_client_request(ROWS))
    assert response.id == "client-1"
    assert response.model_name == "ml-api"
    pinned = client.model_version_infer("ml-api", "base", request=_client_request(ROWS))
    assert pinned.model_version == "base"

    body = json.loads(response.json())
    with httpx.Client(base_url=url, timeout=30) as http:
        ours = http.post("/predict", json={"instances": ROWS}).json()["predictions"]
    assert outputs_by_name(body)["predict"]["data"] == [row["label"] for row in ours]
    expected = [value for row in ours for value in row["probabilities"].values()]
    got = [value for row in probabilities_of(body) for value in row]
    assert got == pytest.approx(expected, abs=1e-12)
