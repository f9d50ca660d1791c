"""Stage preprocess: raw data checks, inferred schema, seeded stratified split."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ml.errors import DataError
from ml.params import DataParams, PreprocessParams
from ml.stages.preprocess import Prepared, preprocess
from ml.validation import read_raw
from tests.ml.frames import custom_frame

GOOD_HEADER = "colour,size,label\n"


def run(
    path: Path,
    preprocess_params: PreprocessParams,
    target: str = "label",
    drop: tuple[str, ...] = (),
) -> Prepared:
    data = DataParams(source=path.name, contract=None, target=target, drop_columns=list(drop))
    raw = read_raw(path, path.name)
    return preprocess(raw, source=path.name, data=data, params=preprocess_params)


def write(tmp_path: Path, text: str, name: str = "input.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def rows(n: int, classes: tuple[str, ...] = ("a", "b")) -> str:
    return "".join(f"red,{i}.5,{classes[i % len(classes)]}\n" for i in range(n))


def test_penguins_split_is_stratified_seeded_and_typed(
    penguins_csv: Path, data_params: DataParams, preprocess_params: PreprocessParams
) -> None:
    raw = read_raw(penguins_csv, "penguins")
    first = preprocess(raw, source="penguins", data=data_params, params=preprocess_params)
    second = preprocess(raw, source="penguins", data=data_params, params=preprocess_params)

    assert first.train.equals(second.train)
    assert first.schema.classes == ["Adelie", "Chinstrap", "Gentoo"]
    assert "year" not in first.schema.feature_names
    island = first.schema.features[0]
    assert (island.name, island.dtype, island.categories) == (
        "island",
        "category",
        ["Biscoe", "Dream", "Torgersen"],
    )
    assert all(f.nullable for f in first.schema.features)
    shares = first.test["species"].value_counts(normalize=True)
    expected = raw["species"].value_counts(normalize=True)
    assert (shares - expected).abs().max() < 0.02
    assert first.train["sex"].dtype == object
    assert first.train["body_mass_g"].dtype == "float64"
    assert first.report["features"]["sex"]["missing"] == 11


def test_missing_value_report_counts_rows_without_target(
    tmp_path: Path, preprocess_params: PreprocessParams
) -> None:
    path = write(tmp_path, GOOD_HEADER + rows(20) + "blue,3.0,\n")

    prepared = run(path, preprocess_params)

    assert prepared.report["rows"] == 21
    assert prepared.report["rows_without_target"] == 1
    assert prepared.report["class_counts"] == {"a": 10, "b": 10}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"input\.csv: the file is empty"),
        ("\n\n", r"input\.csv: the file is empty"),
        (GOOD_HEADER, r"input\.csv: no data rows below the header"),
        ("colour,size,kind\n" + rows(10), r"input\.csv: target column 'label' .*not found"),
        (
            GOOD_HEADER + rows(10, ("a",)),
            r"input\.csv: target column 'label' has a single class 'a'",
        ),
        (
            GOOD_HEADER + rows(10) + "red,1.0,c\n",
            r"class\(es\) 'c' of target 'label' have a single row",
        ),
        (
            GOOD_HEADER + rows(30) + "red,abc,a\n",
            r"input\.csv: column 'size' is numeric .*line 32: 'abc'",
        ),
        (
            GOOD_HEADER + rows(10) + "red,inf,a\n",
            r"column 'size', line 12: inf is not a finite number",
        ),
        ("colour,size,size,label\n", r"header repeats column\(s\) 'size'"),
        ("colour,,label\nred,1,a\n", r"header has an empty column name"),
        (
            "colour,size,label\n" + "".join(f",{i},{'ab'[i % 2]}\n" for i in range(10)),
            r"column 'colour' has no values",
        ),
    ],
    ids=[
        "empty-file",
        "blank-file",
        "header-only",
        "no-target-column",
        "one-class",
        "single-row-class",
        "stray-string-in-numeric-column",
        "infinite-number",
        "repeated-column",
        "unnamed-column",
        "empty-column",
    ],
)
def test_bad_data_stops_with_a_message_naming_the_problem(
    tmp_path: Path, preprocess_params: PreprocessParams, text: str, message: str
) -> None:
    path = write(tmp_path, text)

    with pytest.raises(DataError, match=message):
        run(path, preprocess_params)


def test_unknown_drop_column_names_the_param(
    tmp_path: Path, preprocess_params: PreprocessParams
) -> None:
    path = write(tmp_path, GOOD_HEADER + rows(10))

    with pytest.raises(
        DataError, match=r"data\.drop_columns: column\(s\) 'year' not in input\.csv"
    ):
        run(path, preprocess_params, drop=("year",))


def test_identifier_like_text_column_is_refused(
    tmp_path: Path, preprocess_params: PreprocessParams
) -> None:
    body = "".join(f"id-{i},{i}.0,{'ab'[i % 2]}\n" for i in range(80))
    path = write(tmp_path, "code,size,label\n" + body)

    with pytest.raises(DataError, match=r"column 'code' has 80 distinct values.*drop_columns"):
        run(path, preprocess_params)


def test_mixed_text_column_is_a_category(
    tmp_path: Path, preprocess_params: PreprocessParams
) -> None:
    body = "".join(f"{'x' if i % 2 else i},{i}.0,{'ab'[i % 3 % 2]}\n" for i in range(12))
    path = write(tmp_path, "code,size,label\n" + body)

    prepared = run(path, preprocess_params)

    assert prepared.schema.features[0].dtype == "category"


def test_too_few_rows_for_the_split_names_the_param(
    tmp_path: Path, preprocess_params: PreprocessParams
) -> None:
    path = write(
        tmp_path, GOOD_HEADER + rows(4, ("a", "b", "c", "d")) + rows(4, ("a", "b", "c", "d"))
    )

    with pytest.raises(DataError, match=r"cannot split 8 rows with params preprocess\.test_size"):
        run(path, preprocess_params)


def test_custom_frame_infers_int_float_and_category(
    tmp_path: Path, preprocess_params: PreprocessParams
) -> None:
    path = tmp_path / "animals.csv"
    custom_frame().to_csv(path, index=False)

    prepared = run(path, preprocess_params, target="grade", drop=("row_id",))

    kinds = {f.name: f.dtype for f in prepared.schema.features}
    assert kinds == {"size": "float", "legs": "int", "colour": "category"}
    assert prepared.schema.classes == ["1", "2", "3"]
    assert isinstance(prepared.train, pd.DataFrame)
