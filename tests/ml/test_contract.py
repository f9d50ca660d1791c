"""The data contract: each way an extract can break it is named, a good extract passes, and
the committed contract agrees with what the pipeline trains on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ml import contract as contract_module
from ml.contract import DataContract, draft, enforce, read_contract, violations
from ml.errors import DataError, ParamsError
from ml.params import DataParams
from ml.stages.preprocess import Prepared
from tests.ml.frames import penguins_table
from tests.ml.project import PROJECT_ROOT

CONTRACT_FILE = PROJECT_ROOT / "ml" / "datasets" / "palmerpenguins.schema.yaml"


def line(index: object) -> str:
    return f"line {int(str(index)) + 2}"


@pytest.fixture(scope="module")
def contract() -> DataContract:
    return read_contract(CONTRACT_FILE)


@pytest.fixture
def table() -> pd.DataFrame:
    return penguins_table()


def with_text(frame: pd.DataFrame, column: str, row: int, value: str) -> pd.DataFrame:
    text = frame[column].map(lambda v: None if pd.isna(v) else str(v)).astype(object)
    text[row] = value
    frame[column] = text
    return frame


def test_the_packaged_table_meets_its_contract(table: pd.DataFrame, contract: DataContract) -> None:
    assert violations(table, contract, line) == []


Damage = Callable[[pd.DataFrame], pd.DataFrame]


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda f: f.drop(columns=["island"]), "missing column 'island'"),
        (
            lambda f: f.assign(batch_id=1),
            "unexpected column 'batch_id' (not in the contract)",
        ),
        (
            lambda f: with_text(f, "flipper_length_mm", 3, "tall"),
            "column 'flipper_length_mm': wrong type: expected float, found text (line 5: 'tall')",
        ),
        (
            lambda f: f.assign(year=f["year"] + 0.5),
            "column 'year': wrong type: expected int, found non-whole numbers "
            "(line 2: 2007.5, line 3: 2007.5, line 4: 2007.5 and 341 more)",
        ),
        (
            lambda f: f.assign(island=f["island"].map({"Biscoe": 0, "Dream": 1, "Torgersen": 2})),
            "column 'island': wrong type: expected category (text), found numbers "
            "(line 2: 2, line 3: 2, line 4: 2 and 341 more)",
        ),
        (
            lambda f: f.assign(body_mass_g=f["body_mass_g"] / 1000),
            "column 'body_mass_g': out of range: 342 value(s) outside [2000, 7500] "
            "(line 2: 3.75, line 3: 3.8, line 4: 3.25 and 339 more)",
        ),
        (
            lambda f: f.assign(year=np.where(f.index == 9, 1999, f["year"])),
            "column 'year': out of range: 1 value(s) outside [2007, …] (line 11: 1999.0)",
        ),
        (
            lambda f: f.assign(sex=f["sex"].replace({"male": "M"})),
            "column 'sex': new category 'M' (168 rows, first at line 2) not in ['female', 'male']",
        ),
    ],
    ids=[
        "missing-column",
        "unexpected-column",
        "text-in-numbers",
        "fractions-in-int",
        "codes-for-categories",
        "unit-change",
        "below-min",
        "new-category",
    ],
)
def test_each_problem_kind_is_named(
    table: pd.DataFrame, contract: DataContract, damage: Damage, problem: str
) -> None:
    found = violations(damage(table), contract, line)

    assert found == [problem]


def test_nullable_false_names_rows_without_a_value(table: pd.DataFrame) -> None:
    strict = DataContract.model_validate(
        {"columns": {"sex": {"type": "category", "categories": ["female", "male"],
                             "nullable": False}}}
    )  # fmt: skip

    found = violations(table[["sex"]], strict, line)

    assert found == [
        "column 'sex': missing values: 11 row(s) have none but the contract says nullable: "
        "false (line 5, line 10, line 11 and 8 more)"
    ]


def test_enforce_raises_one_message_with_every_problem(
    table: pd.DataFrame, contract: DataContract
) -> None:
    frame = table.drop(columns=["sex"]).assign(island="Atlantis")

    with pytest.raises(DataError) as raised:
        enforce(frame, contract, source="x.csv", contract_name="c.yaml", locate=line)

    message = str(raised.value)
    assert message.startswith("x.csv breaks the data contract c.yaml (2 problems; ")
    assert "missing column 'sex'" in message
    assert "new category 'Atlantis' (344 rows" in message


def test_a_column_with_no_values_is_only_a_problem_when_not_nullable(
    table: pd.DataFrame, contract: DataContract
) -> None:
    # Read from CSV, an all-blank column is float64 NaN: no values, so no wrong type either.
    blank = table.assign(sex=np.nan, bill_depth_mm=np.nan)

    assert violations(blank, contract, line) == []


def test_an_empty_extract_is_a_problem(contract: DataContract, table: pd.DataFrame) -> None:
    assert violations(table.iloc[:0], contract, line) == ["no data rows"]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("columns: {}\n", r"columns: .*at least 1"),
        ("columns: {a: {type: text}}\n", r"columns\.a\.type"),
        ("columns: {a: {type: category}}\n", r"needs its 'categories'"),
        ("columns: {a: {type: float, categories: [x]}}\n", r"'categories' are for category"),
        ("columns: {a: {type: float, min: 3, max: 1}}\n", r"'min' 3\.0 is above 'max' 1\.0"),
        ("columns: {a: {type: float, maximum: 3}}\n", r"columns\.a\.maximum: Extra inputs"),
        ("columns: [\n", r"not valid YAML"),
    ],
)
def test_a_broken_contract_file_names_the_key(tmp_path: Path, document: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(document, encoding="utf-8")

    with pytest.raises(ParamsError, match=message):
        read_contract(path)


def test_a_missing_contract_file_names_the_param(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=r"params data\.contract: .*nope\.yaml not found"):
        read_contract(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "contract_path",
    ["contracts/p.yaml", "/abs/ml/datasets/p.yaml", "ml/datasets/../p.yaml", "ml/datasets/p.json"],
)
def test_params_keep_contracts_in_the_tracked_folder(
    data_params: DataParams, contract_path: str
) -> None:
    with pytest.raises(ValueError, match=r"must be a \.yaml file in ml/datasets/"):
        DataParams.model_validate({**data_params.model_dump(), "contract": contract_path})


def test_a_draft_is_met_by_the_data_it_was_drawn_from(table: pd.DataFrame) -> None:
    drafted = DataContract.model_validate(yaml.safe_load(yaml.safe_dump(draft(table))))

    assert violations(table, drafted, line) == []
    assert drafted.columns["year"].type == "int"
    assert drafted.columns["island"].categories == ["Biscoe", "Dream", "Torgersen"]
    assert drafted.columns["bill_length_mm"].min == 32.1


def test_contract_agrees_with_the_features_the_pipeline_infers(
    contract: DataContract, prepared_penguins: Prepared
) -> None:
    # Skew guard and model must not disagree: every feature of the trained schema is in the
    # contract with a compatible type, and its categories are exactly the contract's.
    for feature in prepared_penguins.schema.features:
        column = contract.columns[feature.name]
        if feature.dtype == "category":
            assert column.type == "category", feature.name
            assert feature.categories == column.categories, feature.name
        else:
            assert column.type in {"float", "int"}, feature.name


def test_draft_command_prints_a_contract_the_source_meets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "extract.csv"
    penguins_table().to_csv(source, index=False)
    monkeypatch.setattr("sys.argv", ["ml.contract", str(source)])

    contract_module.main()

    printed = capsys.readouterr().out
    assert printed.startswith("# Draft data contract: review")
    drafted = DataContract.model_validate(yaml.safe_load(printed))
    assert violations(pd.read_csv(source), drafted, line) == []
    assert drafted.columns["sex"].categories == ["female", "male"]
