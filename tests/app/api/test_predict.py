from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY

from app.registry.store import ModelRegistry
from tests.conftest import app_client
from tests.models import model_frame, sample_rows, trained


def _labels_from_model(rows: list[dict[str, Any]]) -> list[str]:
    return [str(x) for x in trained("logreg").predict(model_frame(rows))]


async def test_json_rows_get_one_prediction_each_in_order(client: httpx.AsyncClient) -> None:
    rows = sample_rows(3, offset=0) + sample_rows(3, offset=160) + sample_rows(3, offset=300)
    response = await client.post("/predict", json={"instances": rows})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_tag"] == "base"
    assert [p["label"] for p in body["predictions"]] == _labels_from_model(rows)
    for prediction in body["predictions"]:
        assert set(prediction["probabilities"]) == {"Adelie", "Chinstrap", "Gentoo"}
        assert sum(prediction["probabilities"].values()) == pytest.approx(1.0)
        assert prediction["label"] == max(
            prediction["probabilities"], key=prediction["probabilities"].__getitem__
        )


def without_id(body: dict[str, Any]) -> dict[str, Any]:
    """The answer without its request id (which differs from request to request)."""
    assert len(body.pop("request_id")) == 32
    return body


async def test_csv_upload_matches_json(client: httpx.AsyncClient) -> None:
    rows = sample_rows(4, offset=10)
    header = list(rows[0])
    lines = [",".join(header)] + [
        ",".join("" if row[k] is None else str(row[k]) for k in header) for row in rows
    ]
    csv_bytes = ("\n".join(lines) + "\n").encode()
    from_csv = await client.post("/predict", files={"file": ("rows.csv", csv_bytes, "text/csv")})
    from_json = await client.post("/predict", json={"instances": rows})
    assert from_csv.status_code == 200, from_csv.text
    assert without_id(from_csv.json()) == without_id(from_json.json())


async def test_csv_columns_no_feature_uses_are_ignored_and_named(
    client: httpx.AsyncClient,
) -> None:
    """A held-out test file (with its label and an id column) scores as it is."""
    rows = sample_rows(3, offset=40)
    header = ["id", *rows[0], "species"]
    lines = [",".join(header)] + [
        ",".join([str(i), *("" if v is None else str(v) for v in row.values()), "Adelie"])
        for i, row in enumerate(rows)
    ]
    response = await client.post(
        "/predict", content="\n".join(lines).encode(), headers={"content-type": "text/csv"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ignored_columns"] == ["id", "species"]
    expected = await client.post("/predict", json={"instances": rows})
    assert body["predictions"] == expected.json()["predictions"]
    assert "ignored_columns" not in expected.json()


async def test_csv_without_a_feature_is_refused_naming_it(client: httpx.AsyncClient) -> None:
    rows = sample_rows(1)
    header = [name for name in rows[0] if name != "island"]
    line = ",".join("" if rows[0][k] is None else str(rows[0][k]) for k in header)
    response = await client.post(
        "/predict",
        content=f"{','.join(header)},species\n{line},Adelie\n".encode(),
        headers={"content-type": "text/csv"},
    )
    assert response.status_code == 422
    assert "missing feature(s) 'island'" in response.json()["error"]["message"]


async def test_request_id_is_echoed_or_made_up(client: httpx.AsyncClient) -> None:
    given = await client.post(
        "/predict", json={"instances": sample_rows(1)}, headers={"X-Request-ID": "order-42.a:b"}
    )
    assert given.headers["x-request-id"] == given.json()["request_id"] == "order-42.a:b"
    made = [await client.post("/predict", json={"instances": sample_rows(1)}) for _ in range(2)]
    ids = {r.json()["request_id"] for r in made}
    assert len(ids) == 2
    assert {r.headers["x-request-id"] for r in made} == ids


@pytest.mark.parametrize(
    ("header", "value", "needle"),
    [
        ("X-Request-ID", "has space", "X-Request-ID"),
        ("X-Request-ID", "x" * 129, "X-Request-ID"),
        ("X-ML-API-Key", "k" * 257, "X-ML-API-Key"),
    ],
)
async def test_bad_request_id_or_key_is_a_400_naming_the_header(
    client: httpx.AsyncClient, header: str, value: str, needle: str
) -> None:
    response = await client.post(
        "/predict", json={"instances": sample_rows(1)}, headers={header: value}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_header"
    assert needle in response.json()["error"]["message"]


async def test_null_in_nullable_feature_is_served(client: httpx.AsyncClient) -> None:
    row = sample_rows(1)[0] | {"sex": None, "body_mass_g": None}
    response = await client.post("/predict", json={"instances": [row]})
    assert response.status_code == 200, response.text


def _row(**changes: Any) -> dict[str, Any]:
    return sample_rows(1)[0] | changes


@pytest.mark.parametrize(
    ("payload", "status", "reason", "needle"),
    [
        ({"instances": []}, 422, "empty", "no rows"),
        ({"rows": []}, 422, "malformed_body", "instances"),
        ({"instances": [1]}, 422, "malformed_body", "instances[0]"),
        ({"instances": [{"island": "Biscoe"}]}, 422, "missing_feature", "bill_length_mm"),
        ({"instances": [_row(colour="red")]}, 422, "unknown_feature", "colour"),
        ({"instances": [_row(bill_length_mm="long")]}, 422, "wrong_type", "bill_length_mm"),
        ({"instances": [_row(bill_length_mm=True)]}, 422, "wrong_type", "bill_length_mm"),
        ({"instances": [_row(island=3)]}, 422, "wrong_type", "island"),
        ({"instances": [_row(body_mass_g=1e300)]}, 422, "out_of_range", "body_mass_g"),
        ({"instances": [_row(island="x" * 300)]}, 422, "too_long", "island"),
    ],
)
async def test_invalid_json_rows_are_refused_naming_the_problem(
    client: httpx.AsyncClient, payload: dict[str, Any], status: int, reason: str, needle: str
) -> None:
    before = REGISTRY.get_sample_value("ml_api_invalid_requests_total", {"reason": reason}) or 0
    response = await client.post("/predict", json=payload)
    assert response.status_code == status
    error = response.json()["error"]
    assert needle in error["message"]
    after = REGISTRY.get_sample_value("ml_api_invalid_requests_total", {"reason": reason})
    assert after == before + 1


@pytest.mark.parametrize(
    ("body", "content_type", "status", "needle"),
    [
        (b'{"instances": [', "application/json", 400, "not valid JSON"),
        (b'{"instances": [{"a": NaN}]}', "application/json", 400, "not valid JSON"),
        (b"[" * 5000 + b"]" * 5000, "application/json", 400, "not valid JSON"),
        (b"hello", "text/plain", 415, "text/plain"),
        (b"island,sex\n\xff\xfe,male\n", "text/csv", 400, "UTF-8"),
        (b"", "text/csv", 422, "empty"),
    ],
)
async def test_malformed_bodies_are_refused(
    client: httpx.AsyncClient, body: bytes, content_type: str, status: int, needle: str
) -> None:
    response = await client.post("/predict", content=body, headers={"content-type": content_type})
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]["message"]


def _csv(rows: list[dict[str, Any]]) -> str:
    header = list(rows[0])
    lines = [",".join(header)]
    lines += [",".join("" if r[k] is None else str(r[k]) for k in header) for r in rows]
    return "\n".join(lines) + "\n"


async def test_csv_ragged_row_names_the_line(client: httpx.AsyncClient) -> None:
    text = _csv(sample_rows(3)).splitlines()
    text[2] += ",extra"
    response = await client.post(
        "/predict", content="\n".join(text), headers={"content-type": "text/csv"}
    )
    assert response.status_code == 422
    assert "CSV line 3" in response.json()["error"]["message"]


async def test_csv_bad_number_names_line_and_column(client: httpx.AsyncClient) -> None:
    rows = sample_rows(3)
    rows[1]["flipper_length_mm"] = "wide"
    response = await client.post(
        "/predict", content=_csv(rows), headers={"content-type": "text/csv"}
    )
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert "CSV line 3" in message
    assert "flipper_length_mm" in message


async def test_multipart_without_file_field_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post("/predict", files={"upload": ("a.csv", b"x", "text/csv")})
    assert response.status_code == 422
    assert "'file'" in response.json()["error"]["message"]


async def test_too_many_rows_is_413(registry_dir: Any) -> None:

    from app.settings import Settings

    async with app_client(Settings(registry_url=str(registry_dir), max_rows=3)) as http:
        ok = await http.post("/predict", json={"instances": sample_rows(3)})
        too_many = await http.post("/predict", json={"instances": sample_rows(4)})
    assert ok.status_code == 200
    assert too_many.status_code == 413
    assert "ML_API_MAX_ROWS" in too_many.json()["error"]["message"]


async def test_body_over_limit_is_413(registry_dir: Any) -> None:

    from app.settings import Settings

    big = orjson.dumps({"instances": sample_rows(40)})
    settings = Settings(registry_url=str(registry_dir), max_upload_bytes=2000)
    async with app_client(settings) as http:
        response = await http.post(
            "/predict", content=big, headers={"content-type": "application/json"}
        )
        upload = await http.post(
            "/predict", files={"file": ("a.csv", _csv(sample_rows(80)).encode(), "text/csv")}
        )

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(big), 500):
                yield big[start : start + 500]

        streamed = await http.post(
            "/predict", content=chunks(), headers={"content-type": "application/json"}
        )
        still_serving = await http.post("/predict", json={"instances": sample_rows(1)})
    assert streamed.status_code == 413, streamed.text
    assert "content-length" not in streamed.request.headers
    assert still_serving.status_code == 200
    assert response.status_code == 413
    assert upload.status_code == 413
    assert "ML_API_MAX_UPLOAD_BYTES" in upload.json()["error"]["message"]


async def test_unknown_category_is_served_and_counted(client: httpx.AsyncClient) -> None:
    labels = {"model_tag": "base", "feature": "island"}
    before = REGISTRY.get_sample_value("ml_api_unknown_categories_total", labels) or 0
    response = await client.post("/predict", json={"instances": [_row(island="Atlantis")]})
    assert response.status_code == 200, response.text
    assert REGISTRY.get_sample_value("ml_api_unknown_categories_total", labels) == before + 1


async def test_predictions_are_counted_by_label(client: httpx.AsyncClient) -> None:
    rows = sample_rows(2)
    response = await client.post("/predict", json={"instances": rows})
    label = response.json()["predictions"][0]["label"]
    sample = {"model_tag": "base", "role": "primary", "label": label}
    before = REGISTRY.get_sample_value("ml_api_predictions_total", sample) or 0
    await client.post("/predict", json={"instances": rows})
    assert REGISTRY.get_sample_value("ml_api_predictions_total", sample) == before + 2


async def test_no_active_model_gives_503(registry: ModelRegistry, registry_dir: Any) -> None:

    from app.settings import Settings

    (registry_dir / "active.json").unlink()
    async with app_client(Settings(registry_url=str(registry_dir))) as http:
        response = await http.post("/predict", json={"instances": sample_rows(1)})
        ready = await http.get("/v2/health/ready")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "no_active_model"
    assert ready.status_code == 503


@pytest.mark.parametrize("cell", ["1_000", "٣٩", "0x10", "4.5.6", " ", "1e"])
async def test_csv_numbers_are_plain_ascii_decimals(client: httpx.AsyncClient, cell: str) -> None:
    rows = sample_rows(2)
    text = _csv(rows).splitlines()
    header = text[0].split(",")
    fields = text[1].split(",")
    fields[header.index("bill_length_mm")] = cell
    text[1] = ",".join(fields)
    response = await client.post(
        "/predict", content="\n".join(text), headers={"content-type": "text/csv"}
    )
    if cell.strip() == "":
        assert response.status_code == 200  # an empty cell is a missing value
        return
    assert response.status_code == 422, response.text
    assert "bill_length_mm" in response.json()["error"]["message"]


async def test_unknown_feature_names_are_shortened_in_errors(client: httpx.AsyncClient) -> None:
    row = _row(**{"x" * 20_000: 1, "y": 2})
    response = await client.post("/predict", json={"instances": [row]})
    assert response.status_code == 422
    assert len(response.text) < 1_000
