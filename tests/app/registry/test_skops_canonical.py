"""Reproducible skops files: equal models give equal bytes, and still load and predict alike."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from scipy import sparse

from app.errors import ModelRejected
from app.registry.model_file import dump_model, load_model, sha256_hex
from app.registry.skops_canonical import FIXED_DATE_TIME, canonical_skops
from tests.conftest import PROJECT_ROOT
from tests.models import penguins, trained

# Dumps, in a fresh interpreter, a fitted pipeline together with what depends on the process:
# sets and a frozenset of strings (order follows the hash salt), bytes (stored under a random
# name). Prints the sha256 of skops' own bytes and of the canonical ones.
DUMP_IN_A_PROCESS = """
import hashlib, skops.io as sio
from app.registry.skops_canonical import canonical_skops
from tests.models import trained
obj = {
    "model": trained("logreg"),
    "labels": {"Adelie", "Chinstrap", "Gentoo", "island", "sex", "bill", "flipper"},
    "frozen": frozenset({"alpha", "beta", "gamma", "delta", "epsilon"}),
    "blob": b"payload",
}
raw = sio.dumps(obj)
print(hashlib.sha256(raw).hexdigest(), hashlib.sha256(canonical_skops(raw)).hexdigest())
"""


def dump_in_processes(hash_seeds: list[int], pycache: Path) -> list[tuple[str, str]]:
    """(raw, canonical) sha256 from one interpreter per hash seed, run side by side."""
    processes = []
    for seed in hash_seeds:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(PYTHONHASHSEED=str(seed), PYTHONPYCACHEPREFIX=str(pycache))
        processes.append(
            subprocess.Popen(
                [sys.executable, "-c", DUMP_IN_A_PROCESS],
                stdout=subprocess.PIPE,
                text=True,
                env=env,
                cwd=PROJECT_ROOT,
            )
        )
    results = []
    for process in processes:
        stdout, _ = process.communicate(timeout=180)
        assert process.returncode == 0
        raw, canonical = stdout.split()
        results.append((raw, canonical))
    return results


def entries(data: bytes) -> list[zipfile.ZipInfo]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return archive.infolist()


def schema_of(data: bytes) -> dict[str, Any]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        document: dict[str, Any] = json.loads(archive.read("schema.json"))
        return document


def ids_in(value: Any) -> list[int]:
    if isinstance(value, dict):
        own = [value["__id__"]] if "__id__" in value else []
        return own + [i for child in value.values() for i in ids_in(child)]
    if isinstance(value, list):
        return [i for child in value for i in ids_in(child)]
    return []


def test_two_processes_with_different_hash_seeds_write_identical_bytes(pycache: Path) -> None:
    first, second = dump_in_processes([1, 2], pycache)

    assert first[0] != second[0], "skops' own bytes differ from process to process"
    assert first[1] == second[1]


@pytest.mark.parametrize("kind", ["logreg", "hgb"])
def test_canonical_file_loads_through_the_allow_list_and_predicts_identically(kind: str) -> None:
    model = trained(kind)
    rows = penguins().drop(columns=["species"])

    data = dump_model(model)
    reloaded = load_model(data, expected_sha256=sha256_hex(data))

    np.testing.assert_array_equal(reloaded.predict_proba(rows), model.predict_proba(rows))
    assert list(reloaded.predict(rows)) == list(model.predict(rows))


@pytest.mark.parametrize("kind", ["logreg", "hgb"])
def test_dumping_a_loaded_model_gives_back_the_same_bytes(kind: str) -> None:
    # What the publish stage relies on: it loads models/model.skops and dumps it again.
    data = dump_model(trained(kind))
    reloaded = load_model(data, expected_sha256=sha256_hex(data))

    assert dump_model(reloaded) == data


def test_entries_carry_fixed_metadata_and_no_memory_addresses() -> None:
    data = dump_model(trained("hgb"))

    infos = entries(data)
    names = [info.filename for info in infos]
    assert names == sorted(names)
    assert {info.date_time for info in infos} == {FIXED_DATE_TIME}
    assert {info.external_attr >> 16 for info in infos} == {0o100644}
    ids = ids_in(schema_of(data))
    # Renumbered 1..n in order of first appearance: no id() of a live object is left.
    assert sorted(set(ids)) == list(range(1, len(set(ids)) + 1))
    array_files = [name for name in names if name.endswith(".npy")]
    assert array_files
    assert all(re.fullmatch(r"\d+\.npy", name) for name in array_files)
    assert max(int(name.split(".")[0]) for name in array_files) == len(array_files)


def test_shared_objects_stay_shared_and_distinct_ones_distinct() -> None:
    shared = np.arange(6.0)
    other = np.arange(6.0)
    data = canonical_skops(sio.dumps({"a": shared, "b": shared, "c": other}))

    loaded = sio.loads(data, trusted=[])

    assert loaded["a"] is loaded["b"]
    assert loaded["c"] is not loaded["a"]
    np.testing.assert_array_equal(loaded["c"], other)


def test_sets_and_frozensets_load_with_their_members() -> None:
    value = {"set": {"b", "a", "c"}, "frozen": frozenset({"y", "x"}), "blob": b"\x00\x01"}

    data = canonical_skops(sio.dumps(value))
    loaded = sio.loads(data, trusted=sio.get_untrusted_types(data=data))

    assert loaded == value


def test_a_sparse_matrix_inner_archive_is_normalised_too() -> None:
    matrix = sparse.csr_matrix(np.eye(4))
    data = canonical_skops(sio.dumps({"m": matrix}))

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        (inner_name,) = [n for n in archive.namelist() if n.endswith(".npz")]
        inner = archive.read(inner_name)
    assert {info.date_time for info in entries(inner)} == {FIXED_DATE_TIME}
    loaded = sio.loads(data, trusted=sio.get_untrusted_types(data=data))
    assert (loaded["m"] != matrix).nnz == 0


def test_canonical_form_is_a_fixed_point() -> None:
    once = dump_model(trained("logreg"))

    assert canonical_skops(once) == once
    assert hashlib.sha256(canonical_skops(once)).hexdigest() == sha256_hex(once)


@pytest.mark.parametrize(
    "data",
    [b"not a zip", canonical_skops(sio.dumps([1, 2]))[:40]],
    ids=["garbage", "truncated"],
)
def test_what_is_not_a_skops_file_is_rejected(data: bytes) -> None:
    with pytest.raises(ModelRejected, match="not a skops file"):
        canonical_skops(data)
