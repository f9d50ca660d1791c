"""Scoring in worker processes (``--workers``) gives the very output of one process, and a
``--fail-fast`` stop names the first bad row of the input whichever worker meets it first."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.batch import ScoreOptions, score_file
from app.errors import RowsRejected
from app.settings import Settings
from tests.app.batch.files import penguin_rows, write_csv

BAD = {(250, "bill_length_mm"): "abc", (1730, "island"): "x" * 300}


@pytest.mark.slow  # spawned workers each import scikit-learn and load the model: ~5 s idle
def test_two_workers_write_the_same_bytes_as_one_process(
    tmp_path: Path, batch_settings: Settings
) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(write_csv(penguin_rows(3000), BAD))
    outputs = {}
    for workers in (1, 2):
        target = tmp_path / f"out-{workers}.csv"
        options = ScoreOptions(
            str(source), str(target), keep=("id",), chunk_rows=200, workers=workers
        )
        summary = score_file(options, batch_settings)
        assert (summary["workers"], summary["rows_failed"]) == (workers, 2)
        outputs[workers] = target.read_bytes()
    assert outputs[1] == outputs[2]


@pytest.mark.slow  # two more spawned workers
def test_fail_fast_with_workers_stops_at_the_first_bad_row_of_the_input(
    tmp_path: Path, batch_settings: Settings
) -> None:
    source = tmp_path / "in.csv"
    # A bad row in each of the first two chunks, which two workers score at the same time.
    bad = {(599, "sex"): "x" * 300, (650, "island"): "x" * 300}
    source.write_bytes(write_csv(penguin_rows(3000), bad))
    options = ScoreOptions(
        str(source), str(tmp_path / "out.csv"), chunk_rows=600, workers=2, fail_fast=True
    )
    with pytest.raises(RowsRejected, match=r"^row 600: feature 'sex' is longer than 256"):
        score_file(options, batch_settings)
