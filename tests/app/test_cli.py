"""The ``ml-api score`` and ``ml-api export`` commands: thin, with clear errors and exit codes."""

from __future__ import annotations

from pathlib import Path

import orjson
from typer.testing import CliRunner

from app.cli import cli
from tests.app.batch.files import penguin_rows, write_csv, write_parquet


def invoke(registry_dir: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli, list(args), env={"ML_API_REGISTRY_URL": str(registry_dir)}, catch_exceptions=False
    )
    return result.exit_code, result.output


def test_score_writes_the_output_and_says_so(registry_dir: Path, tmp_path: Path) -> None:
    source, target = tmp_path / "in.csv", tmp_path / "scores.jsonl"
    source.write_bytes(write_csv(penguin_rows(30)))
    code, output = invoke(
        registry_dir, "score", str(source), str(target), "--keep", "id", "--no-progress"
    )
    assert code == 0, output
    assert f"30 rows: 30 scored, 0 failed; output {target}" in output
    assert len(target.read_bytes().splitlines()) == 30
    summary = orjson.loads((tmp_path / "scores.jsonl.summary.json").read_bytes())
    assert summary["output_format"] == "jsonl"


def test_score_with_fail_fast_exits_non_zero_naming_the_row(
    registry_dir: Path, tmp_path: Path
) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(write_csv(penguin_rows(30), {(7, "body_mass_g"): "heavy"}))
    code, output = invoke(
        registry_dir, "score", str(source), str(tmp_path / "o.csv"), "--fail-fast", "--no-progress"
    )
    assert code == 1
    assert "error: row 8, column 'body_mass_g': expected a number, got 'heavy'" in output


def test_score_refuses_bad_options_before_reading(registry_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(write_csv(penguin_rows(3)))
    cases = {
        ("--shard", "2/2"): "--shard '2/2': need 0 <= i < N",
        ("--tag", "nope"): "no experiment with tag 'nope'",
        ("--keep", "id,,x"): "--keep 'id,,x': empty column name",
    }
    for extra, message in cases.items():
        code, output = invoke(registry_dir, "score", str(source), str(tmp_path / "o.csv"), *extra)
        assert code == 1, (extra, output)
        assert message in output, (extra, output)
    code, output = invoke(registry_dir, "score", str(source), str(tmp_path / "o.txt"))
    assert code == 1
    assert "cannot tell the format of the output" in output
    assert not list(tmp_path.glob("o.*"))


def test_score_shows_a_progress_bar_when_asked(registry_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.parquet"
    source.write_bytes(write_parquet(penguin_rows(300)))
    code, output = invoke(
        registry_dir, "score", str(source), str(tmp_path / "o.csv"), "--chunk-rows", "100",
        "--progress",
    )  # fmt: skip
    assert code == 0, output
    assert "scoring with base" in output
    assert "300 rows (0 failed)" in output
    assert "rows/s" in output
