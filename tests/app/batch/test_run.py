"""Batch runs end to end, in process: every format, local and on S3, rows in input order, kept
and ignored columns, bad rows reported, --fail-fast, checks before scoring, the summary."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.batch import ScoreOptions, score_file
from app.errors import BatchInputError, RowsRejected
from app.registry.store import ModelRegistry
from app.settings import Settings
from tests.app.batch.files import (
    CLASSES,
    PROBAS,
    assert_scored_like_the_service,
    encode,
    penguin_rows,
    put,
    read_output,
    write_csv,
    write_jsonl,
    write_parquet,
)

FORMATS = ["csv", "parquet", "jsonl"]
N_ROWS = 700


def summary_of(output: str) -> dict[str, Any]:
    import fsspec

    with fsspec.open(output + ".summary.json", "rb") as handle:
        return dict(orjson.loads(handle.read()))


@pytest.mark.parametrize("fmt", FORMATS)
def test_local_file_is_scored_in_input_order_like_the_service(
    fmt: str, tmp_path: Path, batch_settings: Settings, registry: ModelRegistry
) -> None:
    rows = penguin_rows(N_ROWS)
    source, target = tmp_path / f"in.{fmt}", tmp_path / f"out.{fmt}"
    source.write_bytes(encode(rows, fmt))

    summary = score_file(
        ScoreOptions(str(source), str(target), keep=("id",), chunk_rows=128), batch_settings
    )

    output = read_output(str(target), fmt)
    assert [row["id"] for row in output] == list(range(N_ROWS))
    assert list(output[0]) == ["id", "label", *PROBAS, "error"]
    assert_scored_like_the_service(output, registry, "base", rows)
    assert summary == summary_of(str(target))
    assert summary["tag"] == "base"  # the deployment's primary
    assert summary["model_sha256"] == registry.read_meta("base").model_sha256
    assert summary["runtime"] == "onnx"
    assert (summary["rows"], summary["rows_scored"], summary["rows_failed"]) == (N_ROWS,) * 2 + (0,)
    assert summary["chunks"] == math.ceil(N_ROWS / 128)
    assert summary["ignored_columns"] == ["species"]
    assert summary["kept_columns"] == ["id"]
    assert summary["duration_seconds"] > 0
    assert summary["rows_per_second"] > 0
    assert not Path(str(target) + ".parts").exists()
    fresh = tmp_path / "fresh"
    fresh.touch()
    assert target.stat().st_mode & 0o777 == fresh.stat().st_mode & 0o777  # as any new file


@pytest.mark.parametrize("fmt", FORMATS)
def test_s3_input_and_output_with_the_registry_on_s3(
    fmt: str, s3_settings: Settings, s3_data: str, registry: ModelRegistry
) -> None:
    rows = penguin_rows(300)
    source, target = f"{s3_data}/in/rows.{fmt}", f"{s3_data}/out/scores.{fmt}"
    put(source, encode(rows, fmt))

    summary = score_file(ScoreOptions(source, target, keep=("id",), chunk_rows=100), s3_settings)

    output = read_output(target, fmt)
    assert [row["id"] for row in output] == list(range(300))
    assert_scored_like_the_service(output, registry, "base", rows)
    assert summary["rows_scored"] == 300
    assert summary_of(target)["output"] == target
    import fsspec

    fs = fsspec.filesystem("s3")
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{s3_data}/out", refresh=True)) == [
        f"scores.{fmt}",
        f"scores.{fmt}.summary.json",
    ]


@pytest.mark.parametrize(("runtime", "used"), [("auto", "onnx"), ("sklearn", "sklearn")])
def test_gradient_boosting_is_scored_by_the_runtime_the_service_would_use(
    tmp_path: Path, batch_settings: Settings, registry: ModelRegistry, runtime: str, used: str
) -> None:
    rows = penguin_rows(200)
    source, target = tmp_path / "in.csv", tmp_path / "out.parquet"
    source.write_bytes(write_csv(rows))
    settings = batch_settings.model_copy(update={"runtime": runtime})

    summary = score_file(
        ScoreOptions(str(source), str(target), tag="boost", keep=("id",)), settings
    )

    assert summary["runtime"] == used
    output = read_output(str(target), "parquet")
    assert_scored_like_the_service(output, registry, "boost", rows, runtime)  # type: ignore[arg-type]


# -- bad rows -------------------------------------------------------------------------
CSV_BAD = {
    (3, "bill_length_mm"): "abc",
    (130, "body_mass_g"): "1e400",
    (131, "flipper_length_mm"): "1_000",
    (257, "island"): "x" * 300,
}
CSV_EXPECTED = {
    3: ("wrong_type", "row 4, column 'bill_length_mm': expected a number, got 'abc'"),
    130: ("out_of_range", "row 131: feature 'body_mass_g' is out of range"),
    131: ("wrong_type", "row 132, column 'flipper_length_mm': expected a number, got '1_000'"),
    257: ("too_long", "row 258: feature 'island' is longer than 256 characters"),
}
JSONL_EXPECTED = {
    3: ("wrong_type", "row 4: feature 'bill_length_mm' expects a number, got '48.6'"),
    130: ("wrong_type", "row 131: feature 'body_mass_g' expects a number, got True"),
    131: ("missing_feature", "row 132: missing feature 'sex'"),
    257: ("malformed_row", "row 258: not a JSON object"),
}
PARQUET_EXPECTED = {
    3: ("out_of_range", "row 4: feature 'bill_length_mm' is out of range"),
    130: ("out_of_range", "row 131: feature 'body_mass_g' is out of range"),
    257: ("too_long", "row 258: feature 'island' is longer than 256 characters"),
}


def bad_input(fmt: str, rows: list[dict[str, Any]]) -> tuple[bytes, dict[int, tuple[str, str]]]:
    if fmt == "csv":
        return write_csv(rows, CSV_BAD), CSV_EXPECTED
    if fmt == "jsonl":
        lines = {
            3: orjson.dumps({**rows[3], "bill_length_mm": "48.6"}),
            130: orjson.dumps({**rows[130], "body_mass_g": True}),
            131: orjson.dumps({k: v for k, v in rows[131].items() if k != "sex"}),
            257: b"[1, 2, 3]",
        }
        return write_jsonl(rows, lines), JSONL_EXPECTED
    typed = [dict(row) for row in rows]
    typed[3]["bill_length_mm"] = math.inf
    typed[130]["body_mass_g"] = 1e16
    typed[257]["island"] = "x" * 300
    return write_parquet(typed), PARQUET_EXPECTED


@pytest.mark.parametrize("fmt", FORMATS)
def test_bad_rows_get_an_error_naming_row_and_feature_and_the_rest_is_scored(
    fmt: str, tmp_path: Path, batch_settings: Settings, registry: ModelRegistry
) -> None:
    rows = penguin_rows(400)
    data, expected = bad_input(fmt, rows)
    source, target = tmp_path / f"in.{fmt}", tmp_path / f"out.{fmt}"
    source.write_bytes(data)

    summary = score_file(
        ScoreOptions(str(source), str(target), keep=("id",), chunk_rows=128), batch_settings
    )

    output = read_output(str(target), fmt)
    assert len(output) == 400
    for index, (_, message) in expected.items():
        row = output[index]
        assert row["error"] is not None
        assert row["error"].startswith(message), row["error"]
        assert row["label"] is None
        assert all(row[name] is None for name in PROBAS)
    good = [i for i in range(400) if i not in expected]
    assert_scored_like_the_service(
        [output[i] for i in good], registry, "base", [rows[i] for i in good]
    )
    assert summary["rows_failed"] == len(expected)
    assert summary["rows_scored"] == 400 - len(expected)
    reasons: dict[str, int] = {}
    for reason, _ in expected.values():
        reasons[reason] = reasons.get(reason, 0) + 1
    assert summary["failures"]["by_reason"] == reasons
    examples = summary["failures"]["examples"]
    assert [e["row"] for e in examples] == [i + 1 for i in sorted(expected)]
    assert [e["message"] for e in examples] == [output[i]["error"] for i in sorted(expected)]


def test_fail_fast_stops_at_the_first_bad_row_and_a_rerun_resumes(
    tmp_path: Path, batch_settings: Settings
) -> None:
    rows = penguin_rows(400)
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_bytes(write_csv(rows, {(300, "bill_depth_mm"): "n/a"}))
    options = ScoreOptions(str(source), str(target), keep=("id",), chunk_rows=100, fail_fast=True)

    with pytest.raises(RowsRejected) as stopped:
        score_file(options, batch_settings)

    assert stopped.value.message.startswith(
        "row 301, column 'bill_depth_mm': expected a number, got 'n/a' (--fail-fast"
    )
    assert "the 300 rows already scored are kept" in stopped.value.message
    assert not target.exists()

    summary = score_file(
        ScoreOptions(str(source), str(target), keep=("id",), chunk_rows=100), batch_settings
    )
    assert summary["resumed_chunks"] == 3
    assert summary["rows_failed"] == 1
    assert [row["id"] for row in read_output(str(target), "csv")] == list(range(400))


# -- refused before scoring ------------------------------------------------------------
def test_a_keep_column_the_input_lacks_is_refused_before_scoring(
    tmp_path: Path, batch_settings: Settings
) -> None:
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_bytes(write_csv(penguin_rows(10)))
    with pytest.raises(BatchInputError, match=r"--keep 'customer': no such column"):
        score_file(ScoreOptions(str(source), str(target), keep=("id", "customer")), batch_settings)
    assert not (tmp_path / "out.csv.parts").exists()
    assert not target.exists()


def test_an_input_without_a_feature_column_is_refused(
    tmp_path: Path, batch_settings: Settings
) -> None:
    rows = [{k: v for k, v in row.items() if k != "sex"} for row in penguin_rows(10)]
    source = tmp_path / "in.parquet"
    source.write_bytes(write_parquet(rows))
    with pytest.raises(BatchInputError, match=r"has no column for feature\(s\) 'sex'"):
        score_file(ScoreOptions(str(source), str(tmp_path / "out.csv")), batch_settings)


def test_a_parquet_column_of_the_wrong_type_is_refused(
    tmp_path: Path, batch_settings: Settings
) -> None:
    rows = [{**row, "body_mass_g": str(row["body_mass_g"])} for row in penguin_rows(10)]
    source = tmp_path / "in.parquet"
    source.write_bytes(write_parquet(rows))
    with pytest.raises(BatchInputError, match=r"column 'body_mass_g' has type string"):
        score_file(ScoreOptions(str(source), str(tmp_path / "out.csv")), batch_settings)


def test_an_input_with_a_header_only_gives_an_output_with_a_header_only(
    tmp_path: Path, batch_settings: Settings
) -> None:
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_bytes(write_csv([]))
    summary = score_file(ScoreOptions(str(source), str(target), keep=("id",)), batch_settings)
    header = ",".join(f'"{name}"' for name in ["id", "label", *PROBAS, "error"])
    assert target.read_text() == header + "\n"
    assert summary["rows"] == 0


def test_the_output_format_may_differ_from_the_input(
    tmp_path: Path, batch_settings: Settings, registry: ModelRegistry
) -> None:
    rows = penguin_rows(50)
    source, target = tmp_path / "in.jsonl", tmp_path / "scores.out"
    source.write_bytes(write_jsonl(rows))
    score_file(
        ScoreOptions(str(source), str(target), keep=("id", "species"), output_format="parquet"),
        batch_settings,
    )
    output = read_output(str(target), "parquet")
    assert [row["species"] for row in output] == [row["species"] for row in rows]
    assert_scored_like_the_service(output, registry, "base", rows)
    assert set(CLASSES) == {name.removeprefix("proba_") for name in PROBAS}
