"""Stage load: the packaged default dataset, or a CSV copied byte for byte."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ml.errors import DataError
from ml.stages.load import load
from tests.ml.project import PROJECT_ROOT

PENGUINS = PROJECT_ROOT / "ml" / "datasets" / "palmerpenguins.yaml"


def test_default_source_is_the_packaged_penguins_table(tmp_path: Path) -> None:
    output = tmp_path / "data" / "raw.csv"

    fingerprint = load(PENGUINS, output)

    lines = output.read_text(encoding="utf-8").splitlines()
    assert lines[0] == (
        "species,island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex,year"
    )
    assert len(lines) == 345
    assert fingerprint == hashlib.sha256(output.read_bytes()).hexdigest()
    assert load(PENGUINS, tmp_path / "again.csv") == fingerprint


def test_csv_source_is_copied_unchanged(tmp_path: Path) -> None:
    source = tmp_path / "mine.csv"
    source.write_bytes(b"a,b\r\n1,x\r\n")

    load(source, tmp_path / "raw.csv")

    assert (tmp_path / "raw.csv").read_bytes() == source.read_bytes()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", "", r"empty\.csv: the file is empty"),
        ("spaces.csv", "  \n", r"spaces\.csv: the file is empty"),
        ("other.yaml", "package: sklearn-iris\n", r"other\.yaml: key 'package' must name one of"),
        ("broken.yaml", "package: [\n", r"broken\.yaml: not valid YAML"),
    ],
)
def test_unusable_source_names_the_file(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    source = tmp_path / name
    source.write_text(content, encoding="utf-8")

    with pytest.raises(DataError, match=message):
        load(source, tmp_path / "raw.csv")
    assert not (tmp_path / "raw.csv").exists()


def test_missing_source_names_the_param(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data\.source: .*nope\.csv is not a file"):
        load(tmp_path / "nope.csv", tmp_path / "raw.csv")
