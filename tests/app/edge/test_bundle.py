"""Edge bundles: the README's example, run by a Python that has only onnxruntime and numpy to
work with (ml-api, scikit-learn and skops imports are blocked), reproduces the service's
predictions; experiments without a verified ONNX copy are refused."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.edge import export_bundle
from app.edge.readme import example_code
from app.errors import ExportRefused
from app.registry.store import ModelRegistry
from app.serving.inputs import InputLimits
from app.serving.model import load_verified
from app.settings import Settings
from tests.models import NUMERIC, publish_numeric, sample_rows

# Runs in `python -I` (no PYTHONPATH, no user site, no current folder on sys.path), with the
# project's packages and scikit-learn made unimportable: the bundle must stand on its own.
HARNESS = """
import importlib.abc, json, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"app", "ml", "sklearn", "skops", "skl2onnx"}:
            raise ImportError(f"{name} may not be imported by an edge bundle")
        return None

sys.meta_path.insert(0, Refuse())
code = open(sys.argv[1], encoding="utf-8").read()
exec(compile(code, "example.py", "exec"), {"__name__": "__main__"})  # its own self-check
example = {"__name__": "example"}
exec(compile(code, "example.py", "exec"), example)
rows = json.load(open(sys.argv[2], encoding="utf-8"))
labels, probabilities = example["predict"](rows)
print(json.dumps({"labels": labels, "probabilities": probabilities.tolist(),
                  "modules": sorted(m for m in sys.modules if m.split(".")[0] in {"app", "ml"})}))
"""


def service_predictions(registry: ModelRegistry, tag: str, rows: list[dict[str, Any]]) -> Any:
    model = load_verified(registry, tag, InputLimits(sys.maxsize, 256))
    assert model.runtime.name == "onnx"
    names = model.schema.names
    return model.predict(model.schema.rows_to_batch([{n: row[n] for n in names} for row in rows]))


@pytest.mark.parametrize(
    "tag",
    [
        "base",  # one [rows, 1] input per feature, strings for categories
        "numeric",  # fitted on an array: one stacked float input
    ],
)
def test_the_bundle_runs_with_onnxruntime_alone_and_gives_the_service_predictions(
    tag: str, registry_dir: Path, registry: ModelRegistry, tmp_path: Path
) -> None:
    if tag == "numeric":
        publish_numeric(registry, tag)
    bundle = tmp_path / "bundle"
    export_bundle(Settings(registry_url=str(registry_dir)), bundle, tag)
    rows = registry.read_meta("base").reference.instances + sample_rows(20, offset=100)
    rows += [{**sample_rows(1)[0], "island": "Atlantis", "sex": None, "body_mass_g": None}]
    if tag == "numeric":  # its features take no missing values
        rows = [row for row in rows if None not in (row[name] for name in NUMERIC)]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    # The README shows the example the bundle ships.
    assert example_code((bundle / "README.md").read_text()) == (bundle / "example.py").read_text()

    result = subprocess.run(
        [sys.executable, "-I", "-c", HARNESS, "example.py", str(tmp_path / "rows.json")],
        cwd=bundle,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("reference rows reproduced:")
    answer = json.loads(lines[-1])
    assert answer["modules"] == []
    expected = service_predictions(registry, tag, rows)
    assert answer["labels"] == expected.labels
    np.testing.assert_allclose(answer["probabilities"], expected.probabilities, atol=1e-6)
    inputs = json.loads((bundle / "model.json").read_text())["inputs"]
    assert len(inputs) == (1 if tag == "numeric" else 6)


def test_the_bundle_lists_each_file_with_its_sha256(
    registry_dir: Path, registry: ModelRegistry, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    exported = export_bundle(Settings(registry_url=str(registry_dir)), bundle, "base")
    sums = {}
    for line in (bundle / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        sums[name] = digest
    assert sorted(sums) == ["README.md", "example.py", "model.json", "model.onnx"]
    for name, digest in sums.items():
        assert hashlib.sha256((bundle / name).read_bytes()).hexdigest() == digest
    assert sums == exported.files
    meta = registry.read_meta("base")
    assert meta.onnx is not None
    assert sums["model.onnx"] == meta.onnx.sha256
    description = json.loads((bundle / "model.json").read_text())
    assert description["model"]["sha256"] == meta.onnx.sha256
    assert description["classes"] == meta.classes
    assert description["missing_values"] == {"category": "", "number": "NaN"}
    island = next(f for f in description["features"] if f["name"] == "island")
    assert island["categories"] == ["Biscoe", "Dream", "Torgersen"]
    assert island["nullable"]
    assert [spec["name"] for spec in description["inputs"]] == [f.name for f in meta.features]
    assert description["inputs"][0] == {
        "name": "island", "element_type": "string", "shape": [None, 1], "features": ["island"]
    }  # fmt: skip
    if shutil.which("sha256sum"):
        subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=bundle, check=True)


def without_verified_onnx(registry_dir: Path, tag: str) -> None:
    """Experiment ``tag``: a copy of ``base`` whose ONNX conversion failed at publish time."""
    source, target = registry_dir / "experiments" / "base", registry_dir / "experiments" / tag
    shutil.copytree(source, target)
    (target / "model.onnx").unlink()
    meta = json.loads((target / "meta.json").read_text())
    meta["tag"] = tag
    meta["onnx"] = {"status": "failed", "note": "not convertible to ONNX: TreeEnsembleClassifier"}
    (target / "meta.json").write_text(json.dumps(meta))


def test_an_experiment_without_a_verified_onnx_copy_is_refused(
    registry_dir: Path, tmp_path: Path
) -> None:
    without_verified_onnx(registry_dir, "no-onnx")
    result = CliRunner().invoke(
        cli,
        ["export", "--tag", "no-onnx", str(tmp_path / "bundle")],
        env={"ML_API_REGISTRY_URL": str(registry_dir)},
    )
    assert result.exit_code == 1
    assert (
        "error: experiment 'no-onnx' has no verified ONNX copy (ONNX status failed: not "
        "convertible to ONNX: TreeEnsembleClassifier)" in result.output
    )
    assert not (tmp_path / "bundle").exists()


def test_an_onnx_file_that_does_not_match_its_hash_is_refused(
    registry_dir: Path, tmp_path: Path
) -> None:
    onnx = registry_dir / "experiments" / "base" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    with pytest.raises(ExportRefused, match=r"model.onnx does not match its sha256"):
        export_bundle(Settings(registry_url=str(registry_dir)), tmp_path / "bundle", "base")


def test_a_folder_that_is_not_empty_is_refused(registry_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "notes.txt").write_text("mine")
    with pytest.raises(ExportRefused, match=r"exists and is not an empty folder"):
        export_bundle(Settings(registry_url=str(registry_dir)), tmp_path / "bundle", "base")
    assert [p.name for p in (tmp_path / "bundle").iterdir()] == ["notes.txt"]
