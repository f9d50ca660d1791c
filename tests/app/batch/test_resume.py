"""A run killed mid-way (SIGKILL, no chance to clean up) and started again with the same
arguments resumes from the chunks already written and scores every row exactly once."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from app.batch import ScoreOptions, score_file
from app.errors import RowsRejected
from app.settings import Settings
from tests.app.batch.files import penguin_rows, read_output, write_csv

ML_API = str(Path(sys.executable).parent / "ml-api")
N_ROWS, CHUNK_ROWS = 40_000, 400


def test_a_killed_run_resumes_and_scores_every_row_exactly_once(
    tmp_path: Path, batch_settings: Settings
) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(write_csv(penguin_rows(N_ROWS)))
    target, parts = tmp_path / "out.csv", tmp_path / "out.csv.parts"
    arguments = [str(source), str(target), "--keep", "id", "--chunk-rows", str(CHUNK_ROWS)]
    env = {**os.environ, "ML_API_REGISTRY_URL": batch_settings.registry_url}
    with subprocess.Popen(
        [ML_API, "score", *arguments, "--no-progress"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=env,
        text=True,
    ) as process:
        assert process.stderr is not None
        try:
            # The first progress line is logged once the first chunk's part is written.
            for line in process.stderr:
                if "rows scored" in line:
                    process.send_signal(signal.SIGKILL)
                    break
        finally:
            process.kill()
            process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    chunks = -(-N_ROWS // CHUNK_ROWS)
    done = sorted(parts.glob("part-*.json"))
    assert not target.exists(), "the run finished before it could be killed"
    assert 1 <= len(done) < chunks

    summary = score_file(
        ScoreOptions(str(source), str(target), keep=("id",), chunk_rows=CHUNK_ROWS),
        batch_settings,
    )

    assert summary["resumed_chunks"] == len(done)
    assert summary["rows"] == N_ROWS
    ids = [row["id"] for row in read_output(str(target), "csv")]
    assert ids == list(range(N_ROWS))
    # The same bytes as a run that was never interrupted.
    reference = tmp_path / "reference.csv"
    score_file(
        ScoreOptions(str(source), str(reference), keep=("id",), chunk_rows=CHUNK_ROWS),
        batch_settings,
    )
    assert target.read_bytes() == reference.read_bytes()
    assert not parts.exists()


def test_parts_of_another_run_are_discarded(tmp_path: Path, batch_settings: Settings) -> None:
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    rows = penguin_rows(300)
    source.write_bytes(write_csv(rows, {(250, "sex"): "x" * 300}))
    options = ScoreOptions(str(source), str(target), keep=("id",), chunk_rows=100)
    first = dataclasses.replace(options, fail_fast=True)
    with pytest.raises(RowsRejected):  # stopped at chunk 2, leaving chunks 0 and 1 written
        score_file(first, batch_settings)
    assert len(list((tmp_path / "out.csv.parts").glob("part-*.json"))) == 2

    source.write_bytes(write_csv(penguin_rows(301)))  # the input changed
    summary = score_file(options, batch_settings)

    assert summary["resumed_chunks"] == 0
    assert [row["id"] for row in read_output(str(target), "csv")] == list(range(301))
