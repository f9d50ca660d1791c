"""Stage load: the packaged default dataset, a CSV copied byte for byte, Parquet, S3 extracts,
and the data contract a broken extract fails."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from pathlib import Path

import boto3
import pandas as pd
import pytest

from ml import layout
from ml.contract import read_contract
from ml.errors import DataError
from ml.stages import load as load_stage
from ml.stages.load import load
from tests.ml.frames import penguins_table
from tests.ml.project import PROJECT_ROOT

PENGUINS = str(PROJECT_ROOT / "ml" / "datasets" / "palmerpenguins.yaml")
CONTRACT_NAME = "ml/datasets/palmerpenguins.schema.yaml"


@pytest.fixture(scope="module")
def extract() -> pd.DataFrame:
    """A fresh extract that meets the contract: the penguins table, a few rows shuffled."""
    return penguins_table().sample(frac=1.0, random_state=3).head(200).reset_index(drop=True)


def broken(extract: pd.DataFrame) -> pd.DataFrame:
    """The four ways an extract breaks: a column gone, text in a number column, a unit change
    (kilograms, out of range), and a category nobody trained on."""
    frame = extract.drop(columns=["sex"])
    # A text column (as Parquet stores it) with one value that is no number.
    text = frame["bill_length_mm"].map(lambda v: None if pd.isna(v) else str(v)).astype(object)
    text[4] = "n/a?"
    frame["bill_length_mm"] = text
    frame.loc[[7, 8], "body_mass_g"] = [3.75, 4.2]
    frame.loc[10, "island"] = "Atlantis"
    return frame


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def contract_kwargs() -> dict[str, object]:
    return {"contract": read_contract(PROJECT_ROOT / CONTRACT_NAME), "contract_name": CONTRACT_NAME}


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    name = f"extracts-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


def put(bucket: str, key: str, data: bytes) -> str:
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=data)
    return f"s3://{bucket}/{key}"


# -- sources ---------------------------------------------------------------------------------


def test_default_source_is_the_packaged_penguins_table_and_meets_its_contract(
    tmp_path: Path,
) -> None:
    output = tmp_path / "data" / "raw.csv"

    record = load(PENGUINS, output, **contract_kwargs())  # type: ignore[arg-type]

    lines = output.read_text(encoding="utf-8").splitlines()
    assert lines[0] == (
        "species,island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex,year"
    )
    assert len(lines) == 345
    assert record["raw_sha256"] == hashlib.sha256(output.read_bytes()).hexdigest()
    assert record["format"] == "package"
    assert record["rows"] == 344
    assert record["contract"] == CONTRACT_NAME
    assert load(PENGUINS, tmp_path / "again.csv") == {**record, "contract": None}


def test_csv_source_is_copied_unchanged(tmp_path: Path) -> None:
    source = tmp_path / "mine.csv"
    source.write_bytes(b"a,b\r\n1,x\r\n")

    record = load(str(source), tmp_path / "raw.csv")

    assert (tmp_path / "raw.csv").read_bytes() == source.read_bytes()
    assert record["sha256"] == record["raw_sha256"] == hashlib.sha256(b"a,b\r\n1,x\r\n").hexdigest()


def test_parquet_extract_on_local_disk_becomes_the_raw_csv(
    tmp_path: Path, extract: pd.DataFrame
) -> None:
    source = tmp_path / "extract.parquet"
    data = parquet_bytes(extract)
    source.write_bytes(data)

    record = load(str(source), tmp_path / "raw.csv", **contract_kwargs())  # type: ignore[arg-type]

    raw = pd.read_csv(tmp_path / "raw.csv")
    pd.testing.assert_frame_equal(raw, extract, check_dtype=False)
    assert record["format"] == "parquet"
    assert record["sha256"] == hashlib.sha256(data).hexdigest()  # of the Parquet bytes
    assert record["rows"] == 200


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_good_extract_on_s3_is_read_and_fingerprinted(
    bucket: str, tmp_path: Path, extract: pd.DataFrame, kind: str
) -> None:
    data = extract.to_csv(index=False).encode() if kind == "csv" else parquet_bytes(extract)
    url = put(bucket, f"penguins/2026-11-29/extract.{kind}", data)

    record = load(url, tmp_path / "raw.csv", **contract_kwargs())  # type: ignore[arg-type]

    assert record["source"] == url
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert len(pd.read_csv(tmp_path / "raw.csv")) == 200


def test_broken_extract_on_s3_names_every_problem_and_writes_nothing(
    bucket: str, tmp_path: Path, extract: pd.DataFrame
) -> None:
    url = put(bucket, "penguins/broken.parquet", parquet_bytes(broken(extract)))

    with pytest.raises(DataError) as raised:
        load(url, tmp_path / "raw.csv", **contract_kwargs())  # type: ignore[arg-type]

    message = str(raised.value)
    assert message.startswith(f"{url} breaks the data contract {CONTRACT_NAME} (4 problems")
    assert "missing column 'sex'" in message
    assert "column 'bill_length_mm': wrong type: expected float, found text (row 5: 'n/a?')" in (
        message
    )
    assert "column 'body_mass_g': out of range: 2 value(s) outside [2000, 7500]" in message
    assert "column 'island': new category 'Atlantis' (1 row, first at row 11)" in message
    assert not (tmp_path / "raw.csv").exists()


def test_missing_s3_object_names_the_url(bucket: str, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=rf"data\.source: s3://{bucket}/nope\.csv not found"):
        load(f"s3://{bucket}/nope.csv", tmp_path / "raw.csv")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", "", r"empty\.csv: the file is empty"),
        ("spaces.csv", "  \n", r"spaces\.csv: the file is empty"),
        ("other.yaml", "package: sklearn-iris\n", r"other\.yaml: key 'package' must name one of"),
        ("broken.yaml", "package: [\n", r"broken\.yaml: not valid YAML"),
        ("table.parquet", "PAR1 not really", r"table\.parquet: not a readable Parquet file"),
        ("table.xlsx", "a,b\n", r"unknown format '\.xlsx'"),
    ],
)
def test_unusable_source_names_the_file(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    source = tmp_path / name
    source.write_text(content, encoding="utf-8")

    with pytest.raises(DataError, match=message):
        load(str(source), tmp_path / "raw.csv")
    assert not (tmp_path / "raw.csv").exists()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("file:///srv/extracts/x.csv", r"unsupported URL scheme 'file': use a path"),
        ("https://example.invalid/x.csv", r"unsupported URL scheme 'https'"),
        ("s3://bucket/datasets/palmerpenguins.yaml", r"a dataset description must be a local"),
    ],
)
def test_unsupported_urls_say_what_is_supported(tmp_path: Path, source: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load(source, tmp_path / "raw.csv")


def test_missing_source_names_the_param(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data\.source: .*nope\.csv is not a file"):
        load(str(tmp_path / "nope.csv"), tmp_path / "raw.csv")


# -- the stage command -------------------------------------------------------------------------


def write_params(root: Path, source: str) -> None:
    text = (PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8")
    (root / "params.yaml").write_text(
        text.replace("source: ml/datasets/palmerpenguins.yaml", f"source: {source}"),
        encoding="utf-8",
    )
    (root / "ml" / "datasets").mkdir(parents=True)
    for name in ("palmerpenguins.yaml", "palmerpenguins.schema.yaml"):
        (root / "ml" / "datasets" / name).write_bytes(
            (PROJECT_ROOT / "ml" / "datasets" / name).read_bytes()
        )


def test_stage_fails_a_broken_csv_extract_with_one_line_naming_each_problem(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    extract: pd.DataFrame,
) -> None:
    broken(extract).to_csv(tmp_path / "extract.csv", index=False)
    write_params(tmp_path, "extract.csv")
    monkeypatch.chdir(tmp_path)

    with pytest.raises(SystemExit) as exited:
        load_stage.main()

    assert exited.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(
        "load: error: extract.csv breaks the data contract "
        "ml/datasets/palmerpenguins.schema.yaml (4 problems; nothing was trained): "
    )
    for problem in (
        "missing column 'sex'",
        "column 'bill_length_mm': wrong type: expected float, found text (line 6: 'n/a?')",
        "column 'body_mass_g': out of range: 2 value(s) outside [2000, 7500] "
        "(line 9: 3.75, line 10: 4.2)",
        "column 'island': new category 'Atlantis' (1 row, first at line 12) not in "
        "['Biscoe', 'Dream', 'Torgersen']",
    ):
        assert problem in line
    assert not layout.RAW_DATA.exists()
    assert not layout.SOURCE_RECORD.exists()


def test_stage_records_what_it_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extract: pd.DataFrame
) -> None:
    (tmp_path / "fresh.parquet").write_bytes(parquet_bytes(extract))
    write_params(tmp_path, "fresh.parquet")
    monkeypatch.chdir(tmp_path)

    load_stage.main()

    record = json.loads(layout.SOURCE_RECORD.read_text(encoding="utf-8"))
    assert record["source"] == "fresh.parquet"
    assert record["sha256"] == hashlib.sha256((tmp_path / "fresh.parquet").read_bytes()).hexdigest()
    assert record["raw_sha256"] == hashlib.sha256(layout.RAW_DATA.read_bytes()).hexdigest()
    assert record["contract"] == CONTRACT_NAME
    assert record["columns"][:2] == ["species", "island"]
