"""Hostile input to /predict: every malformed body gets a clean 4xx and the service keeps serving.

Complements tests/app/api/test_predict.py, which already covers: an empty ``instances``, a
missing ``instances``, a non-object row, missing and unknown features, a string or a bool in a
numeric field, a number in a category field, 1e300, a 300-character category, truncated JSON,
a ``NaN`` literal, 5000 nested brackets, ``text/plain``, a non-UTF-8 CSV, an empty CSV, a ragged
CSV row with an extra field, a bad CSV number, a multipart upload without the ``file`` field,
too many JSON rows, bodies over the byte limit (declared and chunked), and unseen category
values, which are served and counted (``test_unknown_category_is_served_and_counted``).

Each case here asserts the whole contract: the expected 4xx, the error envelope with a code and
a message naming the problem, no internals in the body, and a normal request served right after.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.settings import PROJECT_ROOT, Settings
from tests.conftest import app_client
from tests.models import sample_rows

ROW: dict[str, Any] = sample_rows(1)[0]
HEADER = ",".join(ROW)
LINE = ",".join("" if value is None else str(value) for value in ROW.values())
FIRST_NUMBER = f"{ROW['bill_length_mm']}"  # the literal the JSON and CSV lines carry
INTERNALS = ("Traceback", 'File "', str(PROJECT_ROOT), "site-packages", ".py:", "/usr/lib")


def json_with(literal: str) -> bytes:
    """A one-row JSON body whose bill_length_mm is ``literal``, written verbatim."""
    body = orjson.dumps({"instances": [ROW]}).decode()
    needle = f'"bill_length_mm":{FIRST_NUMBER}'
    assert needle in body
    return body.replace(needle, f'"bill_length_mm":{literal}').encode()


def json_row(**changes: Any) -> bytes:
    return orjson.dumps({"instances": [ROW | changes]})


def csv_with(line: str, header: str = HEADER) -> bytes:
    return f"{header}\n{line}\n".encode()


def multipart(*parts: tuple[str, str | None, bytes]) -> tuple[bytes, str]:
    """A multipart/form-data body of (field name, file name or None, content) parts."""
    boundary = "hostile-boundary-7f3a"
    chunks = []
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        chunks.append(
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
            f"Content-Type: text/csv\r\n\r\n".encode()
            + content
            + b"\r\n"
        )
    body = b"".join(chunks) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


GOOD_CSV = csv_with(LINE)
TWO_FILES = multipart(("file", "a.csv", GOOD_CSV), ("file", "b.csv", GOOD_CSV))
FILE_AS_TEXT_FIELD = multipart(("file", None, GOOD_CSV))
LATIN1_UPLOAD = multipart(
    ("file", "a.csv", csv_with(LINE).decode().replace("Torg", "Tørg").encode("latin-1"))
)
SHORT_ROW_UPLOAD = multipart(("file", "a.csv", csv_with(LINE.rsplit(",", 2)[0])))
MANY_FIELDS = multipart(*[(f"f{i}", None, b"x") for i in range(12)], ("file", "a.csv", GOOD_CSV))

JSON = "application/json"
CSV = "text/csv"

HOSTILE = [
    # -- JSON numbers the parser or the schema refuses -----------------------------------
    pytest.param(json_with("Infinity"), JSON, 400, "not valid JSON", id="json-Infinity-literal"),
    pytest.param(json_with("-Infinity"), JSON, 400, "not valid JSON", id="json-minus-Infinity"),
    pytest.param(json_with("1e999"), JSON, 400, "infinity", id="json-1e999"),
    pytest.param(json_with("-1e999"), JSON, 400, "infinity", id="json-minus-1e999"),
    pytest.param(json_with("nan"), JSON, 400, "not valid JSON", id="json-nan-lowercase"),
    pytest.param(json_with(str(2**70)), JSON, 422, "out of range", id="json-int-2**70"),
    pytest.param(json_with(str(-(2**70))), JSON, 422, "out of range", id="json-int-minus-2**70"),
    pytest.param(json_with("9" * 400), JSON, 400, "infinity", id="json-400-digit-int"),
    pytest.param(json_with('"39.1"'), JSON, 422, "expects a number", id="json-numeric-string"),
    pytest.param(
        json_with('"' + "9" * 50_000 + '"'),
        JSON,
        422,
        "expects a number",
        id="json-50k-digit-string",
    ),
    # -- JSON structure ------------------------------------------------------------------
    pytest.param(
        json_row(island={"name": "Biscoe"}),
        JSON,
        422,
        "'island' expects a string",
        id="json-object-as-category",
    ),
    pytest.param(
        json_row(body_mass_g={"grams": 5}),
        JSON,
        422,
        "'body_mass_g' expects a number",
        id="json-object-as-number",
    ),
    pytest.param(
        json_row(bill_depth_mm=[16.0]),
        JSON,
        422,
        "'bill_depth_mm' expects a number",
        id="json-list-as-number",
    ),
    pytest.param(json_row(sex="m" * 100_000), JSON, 422, "longer than", id="json-100k-string"),
    pytest.param(
        b'{"instances":[{"island":' + b"[" * 3000 + b"]" * 3000 + b"}]}",
        JSON,
        400,
        "depth",
        id="json-deeply-nested-value",
    ),
    pytest.param(
        b'{"a":' * 2000 + b"1" + b"}" * 2000, JSON, 400, "depth", id="json-deeply-nested-objects"
    ),
    pytest.param(b'{"instances": null}', JSON, 422, "instances", id="json-instances-null"),
    pytest.param(b'{"instances": {"0": {}}}', JSON, 422, "instances", id="json-instances-object"),
    pytest.param(b'{"instances": [null]}', JSON, 422, "instances[0]", id="json-null-row"),
    pytest.param(b"true", JSON, 422, "JSON object", id="json-scalar-document"),
    pytest.param(b"", JSON, 400, "empty", id="json-empty-body"),
    pytest.param(json_row() + b" trailing", JSON, 400, "after document", id="json-trailing-data"),
    pytest.param(b"\xef\xbb\xbf" + json_row(), JSON, 400, "BOM", id="json-with-BOM"),
    pytest.param(b'{"instances":[{"island":"\xff"}]}', JSON, 400, "UTF-8", id="json-not-utf8"),
    # -- CSV -----------------------------------------------------------------------------
    pytest.param(f"{HEADER}\n".encode(), CSV, 422, "no rows", id="csv-header-only"),
    pytest.param(b"\n\n\n", CSV, 422, "empty", id="csv-blank-lines-only"),
    pytest.param(
        csv_with(LINE.replace("Torgersen", '"Torg"ersen')),
        CSV,
        400,
        "malformed",
        id="csv-quote-in-the-middle",
    ),
    pytest.param(
        csv_with(LINE.replace("Torgersen", '"Torgersen')),
        CSV,
        400,
        "malformed",
        id="csv-unterminated-quote",
    ),
    pytest.param(
        csv_with(f"{LINE},Biscoe", header=f"{HEADER},island"),
        CSV,
        422,
        "repeats a column",
        id="csv-duplicate-column",
    ),
    pytest.param(
        csv_with(LINE.rsplit(",", 2)[0]), CSV, 422, "CSV line 2: 4 fields", id="csv-short-row"
    ),
    pytest.param(
        f"{HEADER.rsplit(',', 1)[0]}\n".encode(),
        CSV,
        422,
        "missing feature",
        id="csv-missing-column",
    ),
    pytest.param(
        csv_with(LINE.replace(FIRST_NUMBER, "inf")), CSV, 422, "expected a number", id="csv-inf"
    ),
    pytest.param(
        csv_with(LINE.replace(FIRST_NUMBER, "-Infinity")),
        CSV,
        422,
        "expected a number",
        id="csv-minus-Infinity",
    ),
    pytest.param(
        csv_with(LINE.replace(FIRST_NUMBER, "1e999")), CSV, 422, "out of range", id="csv-1e999"
    ),
    pytest.param(
        csv_with(LINE.replace(FIRST_NUMBER, str(2**70))),
        CSV,
        422,
        "out of range",
        id="csv-int-2**70",
    ),
    pytest.param(
        csv_with(LINE.replace("Torgersen", "x" * 300)),
        CSV,
        422,
        "longer than",
        id="csv-long-category",
    ),
    pytest.param(
        csv_with(LINE.replace("Torgersen", "x" * 200_000)),
        CSV,
        400,
        "field limit",
        id="csv-200k-field",
    ),
    pytest.param(csv_with(LINE.replace("Torgersen", "a\x00b")), CSV, 400, "NUL", id="csv-NUL-byte"),
    pytest.param(GOOD_CSV.decode().encode("utf-16"), CSV, 400, "UTF-8", id="csv-utf16"),
    pytest.param(json_row(), CSV, 400, "CSV file is malformed", id="csv-that-is-json"),
    # -- multipart -----------------------------------------------------------------------
    pytest.param(*TWO_FILES, 400, "Too many files", id="multipart-two-files"),
    pytest.param(*FILE_AS_TEXT_FIELD, 422, "'file'", id="multipart-file-as-text-field"),
    pytest.param(*LATIN1_UPLOAD, 400, "UTF-8", id="multipart-latin1-csv"),
    pytest.param(*SHORT_ROW_UPLOAD, 422, "CSV line 2", id="multipart-ragged-csv"),
    pytest.param(*MANY_FIELDS, 400, "Too many fields", id="multipart-many-fields"),
    pytest.param(b"--x\r\n", "multipart/form-data", 400, "boundary", id="multipart-no-boundary"),
    pytest.param(
        b"--other\r\ngarbage",
        "multipart/form-data; boundary=abc",
        400,
        "multipart",
        id="multipart-wrong-boundary",
    ),
    # -- content type --------------------------------------------------------------------
    pytest.param(json_row(), "text/plain", 415, "'text/plain'", id="valid-json-as-text-plain"),
    pytest.param(json_row(), "application/xml", 415, "'application/xml'", id="valid-json-as-xml"),
    pytest.param(
        json_row(),
        "application/x-www-form-urlencoded",
        415,
        "x-www-form-urlencoded",
        id="valid-json-as-form",
    ),
    pytest.param(json_row(), None, 415, "missing", id="valid-json-without-content-type"),
]


def assert_clean_refusal(response: httpx.Response, status: int, needle: str) -> None:
    """The status, the error envelope naming the problem, and nothing of our internals."""
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message"}
    assert isinstance(error["code"], str)
    assert error["code"]
    assert isinstance(error["message"], str)
    assert needle.lower() in error["message"].lower(), error["message"]
    for internal in INTERNALS:
        assert internal not in response.text, f"{internal!r} leaked: {response.text[:500]}"


async def assert_still_serving(client: httpx.AsyncClient) -> None:
    response = await client.post("/predict", json={"instances": sample_rows(2)})
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 2


@pytest.mark.parametrize(("body", "content_type", "status", "needle"), HOSTILE)
async def test_hostile_body_gets_a_clean_4xx_and_the_service_keeps_serving(
    client: httpx.AsyncClient, body: bytes, content_type: str | None, status: int, needle: str
) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    response = await client.post("/predict", content=body, headers=headers)
    assert_clean_refusal(response, status, needle)
    await assert_still_serving(client)


async def test_csv_with_a_utf8_bom_is_served_like_one_without(client: httpx.AsyncClient) -> None:
    plain = await client.post("/predict", content=GOOD_CSV, headers={"content-type": CSV})
    with_bom = await client.post(
        "/predict", content=b"\xef\xbb\xbf" + GOOD_CSV, headers={"content-type": CSV}
    )
    assert plain.status_code == with_bom.status_code == 200, with_bom.text
    assert {**with_bom.json(), "request_id": ""} == {**plain.json(), "request_id": ""}


# -- limits: rows and bytes, with a service configured small ------------------------------
MAX_BYTES = 4096


@pytest.fixture
async def small_client(registry_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(
        Settings(registry_url=str(registry_dir), max_rows=3, max_upload_bytes=MAX_BYTES)
    ) as http:
        yield http


@pytest.mark.parametrize("upload", [False, True], ids=["text-csv", "multipart"])
async def test_csv_over_the_row_limit_is_413(small_client: httpx.AsyncClient, upload: bool) -> None:
    data = f"{HEADER}\n{(LINE + chr(10)) * 4}".encode()
    body, content_type = multipart(("file", "a.csv", data)) if upload else (data, CSV)
    response = await small_client.post(
        "/predict", content=body, headers={"content-type": content_type}
    )
    assert_clean_refusal(response, 413, "ML_API_MAX_ROWS")
    await assert_still_serving(small_client)


class EndlessBody:
    """A request body that never ends: a server that buffered it whole would never answer."""

    def __init__(self, first: bytes, repeated: bytes) -> None:
        self.first = first
        self.repeated = repeated
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.sent += len(self.first)
        yield self.first
        while True:
            self.sent += len(self.repeated)
            yield self.repeated


BOUNDARY_HEAD = (
    b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n'
    b"Content-Type: text/csv\r\n\r\n"
)
STREAMS = [
    pytest.param(b'{"instances":[', json_row()[14:-2] + b",", JSON, id="json"),
    pytest.param(f"{HEADER}\n".encode(), f"{LINE}\n".encode(), CSV, id="text-csv"),
    pytest.param(
        BOUNDARY_HEAD + f"{HEADER}\n".encode(),
        f"{LINE}\n".encode(),
        "multipart/form-data; boundary=b0undary",
        id="multipart-upload",
    ),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("first", "repeated", "content_type"), STREAMS)
async def test_endless_body_is_refused_while_streaming(
    small_client: httpx.AsyncClient, first: bytes, repeated: bytes, content_type: str
) -> None:
    """No Content-Length and no end: the limit must trip on the bytes read so far."""
    body = EndlessBody(first, repeated)
    response = await small_client.post(
        "/predict", content=body, headers={"content-type": content_type}
    )
    assert "content-length" not in response.request.headers
    assert_clean_refusal(response, 413, "ML_API_MAX_UPLOAD_BYTES")
    # Read no further than the chunk that crossed the limit.
    assert MAX_BYTES < body.sent <= MAX_BYTES + len(first) + len(repeated)
    await assert_still_serving(small_client)
