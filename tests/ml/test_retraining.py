"""The retraining path as a triggered pipeline runs it: the scripts of the retrain,
retrain-publish and retrain-shadow jobs, read from .gitlab-ci.yml, run in a copy of the
project on a fresh Parquet extract in a real S3 server (moto), against a recording deployment
API. The retrained experiment is published next to the active one and joins the deployment as
a shadow; the primary does not change. A broken extract fails the retrain job before anything
is trained, naming every problem."""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pandas as pd
import pytest
import yaml

from app.registry.store import ModelRegistry
from tests.delivery.tools import load_gitlab_ci
from tests.ml.deployment_server import DeploymentServer, Recorded
from tests.ml.frames import penguins_table
from tests.ml.project import COMMAND_TIMEOUT, Project, make_project

TAG = "abc1234-r12"  # what .retraining's ML_API_EXPERIMENT_TAG gives for that commit and IID
TOKEN = "retrain-test-token-0123456789"
REASON = "drift: PSI above 0.2 on 2 features for 1h"


def job_script(job: str) -> str:
    """A job's script from .gitlab-ci.yml, as one bash program that stops at the first
    failing command, like a runner does."""
    lines = load_gitlab_ci()[job]["script"]
    return "set -eo pipefail\n" + "\n".join(lines)


def run_job(
    project: Project, job: str, variables: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    # No ML_API_REGISTRY_URL, as in CI: the jobs name the registries themselves.
    env = {k: v for k, v in project.env.items() if k != "ML_API_REGISTRY_URL"}
    return subprocess.run(
        ["bash", "-c", job_script(job)],
        cwd=project.root,
        env={**env, **variables},
        capture_output=True,
        text=True,
        check=False,
        timeout=COMMAND_TIMEOUT * 2,
    )


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def fresh_extract() -> pd.DataFrame:
    """This year's field season: the penguins resampled, measured in 2026."""
    table = penguins_table().sample(n=300, replace=True, random_state=11)
    return table.assign(year=2026).reset_index(drop=True)


def trigger_variables(data_source: str, bucket: str, tmp: Path) -> dict[str, str]:
    return {
        "CI_PIPELINE_SOURCE": "trigger",
        "RETRAIN_REASON": REASON,
        "DRIFTED_FEATURES": "bill_length_mm=0.31,flipper_length_mm=0.24",
        "ACTIVE_TAG": "base",
        "DATA_SOURCE": data_source,
        "ML_API_EXPERIMENT_TAG": TAG,
        "DVC_S3_URL": f"s3://{bucket}/dvc-cache",
        "STAGING_REGISTRY_URL": str(tmp / "staging"),
        "PRODUCTION_REGISTRY_URL": str(tmp / "production"),
    }


def new_bucket(endpoint: str) -> str:
    name = f"retrain-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
    return name


def output(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\nstdout:\n{done.stdout[-6000:]}\nstderr:\n{done.stderr[-4000:]}"


@dataclass(frozen=True)
class Retrained:
    project: Project
    production: Path
    staging: Path
    extract_url: str
    extract_sha256: str
    retrain: subprocess.CompletedProcess[str]
    retrain_seconds: float
    publish: subprocess.CompletedProcess[str]
    shadow: subprocess.CompletedProcess[str]
    shadow_puts: list[Recorded]
    report: str
    lock: dict[str, Any]
    source_record: dict[str, Any]
    status_after: str
    status_after_new_extract: str


@pytest.fixture(scope="module")
def retrained(
    s3_endpoint: str, seed_registry: Path, tmp_path_factory: pytest.TempPathFactory, pycache: Path
) -> Retrained:
    tmp = tmp_path_factory.mktemp("retraining")
    project = make_project(tmp, pycache)
    project.commit_all("pipeline at the commit the trigger names")
    # Production serves "base" (active); staging is another registry.
    shutil.copytree(seed_registry, tmp / "production")
    bucket = new_bucket(s3_endpoint)
    data = parquet_bytes(fresh_extract())
    key = "penguins/2026-11-29/extract.parquet"
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=data)
    url = f"s3://{bucket}/{key}"
    variables = trigger_variables(url, bucket, tmp)

    started = time.perf_counter()
    retrain = run_job(project, "retrain", variables)
    retrain_seconds = time.perf_counter() - started
    assert retrain.returncode == 0, output(retrain)
    publish = run_job(project, "retrain-publish", variables)
    assert publish.returncode == 0, output(publish)
    live = {"primary": "base", "candidates": [{"tag": "boost", "weight": 10}], "shadows": []}
    with DeploymentServer(live, TOKEN) as server:
        shadow = run_job(
            project, "retrain-shadow", {**variables, "ML_API_URL": server.url,
                                        "ML_API_ADMIN_TOKEN": TOKEN}
        )  # fmt: skip
    status_after = project.dvc("status").stdout
    # The extract at the same URL is replaced: DVC sees the new ETag.
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=parquet_bytes(fresh_extract()[:200]))
    status_after_new_extract = project.dvc("status").stdout
    return Retrained(
        project=project,
        production=tmp / "production",
        staging=tmp / "staging",
        extract_url=url,
        extract_sha256=hashlib.sha256(data).hexdigest(),
        retrain=retrain,
        retrain_seconds=retrain_seconds,
        publish=publish,
        shadow=shadow,
        shadow_puts=server.state.puts,
        report=(project.root / "report.md").read_text(encoding="utf-8"),
        lock=yaml.safe_load((project.root / "dvc.lock").read_text(encoding="utf-8")),
        source_record=project.read_json("data/source.json"),
        status_after=status_after,
        status_after_new_extract=status_after_new_extract,
    )


@pytest.mark.slow
def test_retrain_job_trains_on_the_extract_it_was_given(retrained: Retrained) -> None:
    params = yaml.safe_load((retrained.project.root / "params.yaml").read_text(encoding="utf-8"))

    assert params["data"]["source"] == retrained.extract_url
    assert retrained.source_record["format"] == "parquet"
    assert retrained.source_record["sha256"] == retrained.extract_sha256
    assert retrained.source_record["rows"] == 300
    assert retrained.source_record["contract"] == "ml/datasets/palmerpenguins.schema.yaml"
    load_deps = {dep["path"]: dep for dep in retrained.lock["stages"]["load"]["deps"]}
    assert "etag" in load_deps[retrained.extract_url]  # DVC tracks the S3 object


@pytest.mark.slow
def test_dvc_sees_when_the_extract_behind_the_url_changes(retrained: Retrained) -> None:
    assert "Data and pipelines are up to date" in retrained.status_after
    assert f"modified:           {retrained.extract_url}" in retrained.status_after_new_extract


@pytest.mark.slow
def test_report_says_why_the_model_was_retrained(retrained: Retrained) -> None:
    report = retrained.report

    assert report.index("## Why this model was retrained") < report.index("## Metrics")
    assert f"| Reason | {REASON} |" in report
    assert "| Model in production | base |" in report
    assert f"| Trained on | {retrained.extract_url} (parquet, 300 rows, sha256 " in report
    assert "| bill_length_mm | 0.310 |" in report
    assert "data.source" in report  # the params diff against HEAD names the new source


@pytest.mark.slow
def test_retrained_experiment_is_published_and_the_active_model_stays(
    retrained: Retrained,
) -> None:
    production = ModelRegistry(str(retrained.production))
    meta = production.read_meta(TAG)
    model_file = retrained.project.root / "models" / "model.skops"

    assert meta.model_extra is not None
    assert meta.model_extra["data_source"] == retrained.extract_url
    assert meta.model_extra["data_source_sha256"] == retrained.extract_sha256
    assert meta.model_sha256 == hashlib.sha256(model_file.read_bytes()).hexdigest()
    active = production.read_active()
    assert active is not None
    assert active.tag == "base"
    assert TAG in ModelRegistry(str(retrained.staging)).list_tags()


@pytest.mark.slow
def test_shadow_job_adds_the_experiment_as_a_shadow_only(retrained: Retrained) -> None:
    assert retrained.shadow.returncode == 0, output(retrained.shadow)
    (put,) = retrained.shadow_puts
    assert put.body == {
        "primary": "base",
        "candidates": [{"tag": "boost", "weight": 10}],
        "shadows": [{"tag": TAG, "percent": 100}],
    }
    assert TOKEN not in retrained.shadow.stdout + retrained.shadow.stderr


# -- what stops a retraining ------------------------------------------------------------------


def test_broken_extract_fails_the_retrain_job_naming_every_problem(
    s3_endpoint: str, tmp_path: Path, pycache: Path
) -> None:
    project = make_project(tmp_path, pycache)
    project.commit_all("pipeline")
    extract = fresh_extract().drop(columns=["sex"])
    bill = extract["bill_length_mm"].map(lambda v: None if pd.isna(v) else str(v)).astype(object)
    bill[4] = "n/a?"
    extract["bill_length_mm"] = bill
    extract.loc[[7, 8], "body_mass_g"] = [3.75, 4.2]  # kilograms
    extract.loc[10, "island"] = "Atlantis"
    bucket = new_bucket(s3_endpoint)
    boto3.client("s3").put_object(Bucket=bucket, Key="bad.parquet", Body=parquet_bytes(extract))
    url = f"s3://{bucket}/bad.parquet"

    done = run_job(project, "retrain", trigger_variables(url, bucket, tmp_path))

    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("load: error:")]
    assert len(errors) == 1, output(done)
    (error,) = errors
    assert f"{url} breaks the data contract ml/datasets/palmerpenguins.schema.yaml (4 problems" in (
        error
    )
    assert "missing column 'sex'" in error
    assert "column 'bill_length_mm': wrong type: expected float, found text (row 5: 'n/a?')" in (
        error
    )
    assert "column 'body_mass_g': out of range: 2 value(s) outside [2000, 7500]" in error
    assert "column 'island': new category 'Atlantis' (1 row, first at row 11)" in error
    assert "Running stage 'preprocess'" not in done.stdout
    assert not (project.root / "models" / "model.skops").exists()


def test_retrain_job_without_an_extract_says_so(tmp_path: Path, pycache: Path) -> None:
    project = make_project(tmp_path, pycache)

    done = run_job(
        project, "retrain", {**trigger_variables("", "unused", tmp_path), "DATA_SOURCE": ""}
    )

    assert done.returncode == 1
    assert "retrain: error: DATA_SOURCE is empty" in done.stderr
    assert not (project.root / "data").exists()
