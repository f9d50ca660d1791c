"""Stage commands as DVC runs them: a bad input is one line on stderr and exit code 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.ml.project import PROJECT_ROOT, pipeline_env


def run_stage(stage: str, root: Path, pycache: Path) -> subprocess.CompletedProcess[str]:
    env = pipeline_env(root / "registry", pycache)
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    return subprocess.run(
        [sys.executable, "-m", f"ml.stages.{stage}"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def write_params(root: Path, **changes: dict[str, object]) -> None:
    document = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8"))
    for section, values in changes.items():
        document[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")


def test_stray_string_names_file_column_and_line_without_traceback(
    tmp_path: Path, pycache: Path
) -> None:
    write_params(tmp_path, data={"source": "mine.csv", "target": "kind", "drop_columns": []})
    body = "".join(f"{i}.5,{'ab'[i % 2]}\n" for i in range(20))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "raw.csv").write_text(f"size,kind\n{body}1O.5,a\n", encoding="utf-8")

    completed = run_stage("preprocess", tmp_path, pycache)

    assert completed.returncode == 1
    assert completed.stderr.strip().splitlines() == [
        "preprocess: error: mine.csv: column 'size' is numeric (95% of values are numbers) but "
        "holds non-numeric value(s) (line 22: '1O.5'); fix or blank them"
    ]
    assert not (tmp_path / "data" / "prepared").exists()


def test_unknown_model_type_stops_the_first_stage(tmp_path: Path, pycache: Path) -> None:
    write_params(tmp_path, model={"type": "xgboost"})

    completed = run_stage("load", tmp_path, pycache)

    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    assert completed.stderr.startswith("load: error: params.yaml: key 'model.type'")
    assert not (tmp_path / "data").exists()
