"""``--shard i/N``: shard i scores the chunks whose index modulo N is i; the shards' outputs
together hold every input row exactly once, and sort back into input order by ``row``."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.batch import ScoreOptions, Shard, score_file
from app.errors import BatchInputError
from app.settings import Settings
from tests.app.batch.files import penguin_rows, read_output, write_parquet

N_ROWS, CHUNK_ROWS, SHARDS = 1050, 100, 3


def test_shards_cover_the_input_exactly_once(tmp_path: Path, batch_settings: Settings) -> None:
    source = tmp_path / "in.parquet"
    source.write_bytes(write_parquet(penguin_rows(N_ROWS)))
    whole = tmp_path / "whole.parquet"
    score_file(
        ScoreOptions(str(source), str(whole), keep=("id",), chunk_rows=CHUNK_ROWS),
        batch_settings,
    )

    union = []
    for index in range(SHARDS):
        target = tmp_path / f"shard-{index}.parquet"
        summary = score_file(
            ScoreOptions(
                str(source),
                str(target),
                keep=("id",),
                chunk_rows=CHUNK_ROWS,
                shard=Shard(index, SHARDS),
            ),
            batch_settings,
        )
        rows = read_output(str(target), "parquet")
        assert {row["row"] // CHUNK_ROWS % SHARDS for row in rows} == {index}
        assert summary["shard"] == f"{index}/{SHARDS}"
        assert summary["input_rows"] == N_ROWS
        assert summary["rows"] == len(rows)
        union += rows

    assert sorted(row["row"] for row in union) == list(range(N_ROWS))
    in_order = [
        {k: v for k, v in row.items() if k != "row"}
        for row in sorted(union, key=lambda r: r["row"])
    ]
    assert in_order == read_output(str(whole), "parquet")


def test_a_shard_without_chunks_writes_an_empty_output(
    tmp_path: Path, batch_settings: Settings
) -> None:
    source = tmp_path / "in.parquet"
    source.write_bytes(write_parquet(penguin_rows(50)))
    target = tmp_path / "shard-1.parquet"
    summary = score_file(
        ScoreOptions(str(source), str(target), keep=("id",), shard=Shard(1, 2)), batch_settings
    )
    assert summary["rows"] == 0
    assert read_output(str(target), "parquet") == []


@pytest.mark.parametrize("text", ["2/2", "1", "-1/3", "a/b", "0/0"])
def test_a_malformed_shard_is_refused(text: str) -> None:
    with pytest.raises(BatchInputError, match=r"--shard"):
        Shard.parse(text)
