"""The GitLab pipeline, evaluated by gitlab-ci-local: which jobs a merge request, a branch,
`main` and a triggered retraining get; the build and shadow jobs run their real scripts
against stand-ins (a recording buildctl, a recording deployment API), and the lint and test
jobs really run (shell executor, in this checkout)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.delivery.tools import ROOT, load_gitlab_ci
from tests.ml.deployment_server import DeploymentServer

GCL_VERSION = "4.73.0"  # 4.74+ crashes on Node 20
GCL_PREFIX = ROOT / ".tools" / "node"
GCL_BIN = GCL_PREFIX / "node_modules" / ".bin" / "gitlab-ci-local"

RETRAINING = {"retrain", "retrain-report", "retrain-publish", "retrain-shadow"}
ALL_JOBS = {
    "lint",
    "test",
    "train",
    "cml-report",
    "publish",
    "build",
    "deploy-staging",
    "deploy-production",
    "promote-staging",
    "promote-production",
} | RETRAINING
EVERY_PIPELINE = {"lint", "test", "train"}
MAIN_ONLY = ALL_JOBS - EVERY_PIPELINE - {"cml-report"} - RETRAINING

MAIN = {"CI_COMMIT_BRANCH": "main", "CI_DEFAULT_BRANCH": "main", "CI_PIPELINE_SOURCE": "push"}
MERGE_REQUEST = {
    "CI_COMMIT_BRANCH": "",  # GitLab does not set it in merge request pipelines
    "CI_COMMIT_REF_NAME": "feature/better-model",
    "CI_DEFAULT_BRANCH": "main",
    "CI_PIPELINE_SOURCE": "merge_request_event",
    "CI_MERGE_REQUEST_IID": "7",
}
BRANCH = {
    "CI_COMMIT_BRANCH": "feature/better-model",
    "CI_DEFAULT_BRANCH": "main",
    "CI_PIPELINE_SOURCE": "push",
}
# What ml-api's trigger sends (POST .../trigger/pipeline, ref=main, variables[...]).
TRIGGER = {
    "CI_COMMIT_BRANCH": "main",
    "CI_DEFAULT_BRANCH": "main",
    "CI_PIPELINE_SOURCE": "trigger",
    "RETRAIN_REASON": "drift",
    "DRIFTED_FEATURES": "bill_length_mm=0.31",
    "ACTIVE_TAG": "1a2b3c4",
    "DATA_SOURCE": "s3://extracts/penguins.parquet",
}


@pytest.fixture(scope="session")
def gitlab_ci_local() -> str:
    """gitlab-ci-local, installed with npm into .tools/node on first use."""
    for tool in ("npm", "node"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed: cannot install or run gitlab-ci-local")
    if shutil.which("rsync") is None:
        pytest.skip("rsync is not installed (apt-get install rsync): gitlab-ci-local needs it")
    if not GCL_BIN.exists() or version(str(GCL_BIN)) != GCL_VERSION:
        subprocess.run(
            [
                "npm", "install", "--prefix", str(GCL_PREFIX), "--no-audit", "--no-fund",
                "--no-save", f"gitlab-ci-local@{GCL_VERSION}",
            ],
            check=True,
            capture_output=True,
            timeout=600,
        )  # fmt: skip
    assert version(str(GCL_BIN)) == GCL_VERSION
    return str(GCL_BIN)


def version(binary: str) -> str:
    done = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=False, timeout=60
    )
    return done.stdout.strip()


def gcl(
    binary: str,
    *args: str,
    variables: dict[str, str],
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    command = [binary, "--ignore-predefined-vars", ",".join(variables)]
    for name, value in variables.items():
        command += ["--variable", f"{name}={value}"]
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


def jobs(binary: str, variables: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Every job with its evaluated `when` (never = not in this pipeline)."""
    done = gcl(binary, "--list-json", variables=variables)
    assert done.returncode == 0, done.stdout + done.stderr
    return {job["name"]: job for job in json.loads(done.stdout)}


def active(listing: dict[str, dict[str, Any]]) -> set[str]:
    return {name for name, job in listing.items() if job["when"] != "never"}


def test_pipeline_defines_every_job(gitlab_ci_local: str) -> None:
    assert set(jobs(gitlab_ci_local, MAIN)) == ALL_JOBS


def test_main_runs_publish_build_deploy_and_manual_promotion(gitlab_ci_local: str) -> None:
    listing = jobs(gitlab_ci_local, MAIN)
    assert active(listing) == ALL_JOBS - {"cml-report"} - RETRAINING
    for name in ("deploy-production", "promote-staging", "promote-production"):
        assert listing[name]["when"] == "manual", name
    for name in ("publish", "build", "deploy-staging"):
        assert listing[name]["when"] == "on_success", name


def test_merge_request_gets_the_cml_report_and_no_delivery(gitlab_ci_local: str) -> None:
    listing = jobs(gitlab_ci_local, MERGE_REQUEST)
    assert active(listing) == EVERY_PIPELINE | {"cml-report"}
    assert not active(listing) & MAIN_ONLY


def test_branch_push_only_checks(gitlab_ci_local: str) -> None:
    assert active(jobs(gitlab_ci_local, BRANCH)) == EVERY_PIPELINE


def test_triggered_pipeline_retrains_publishes_and_shadows_only(gitlab_ci_local: str) -> None:
    listing = jobs(gitlab_ci_local, TRIGGER)

    assert active(listing) == RETRAINING
    for name in RETRAINING:
        assert listing[name]["when"] == "on_success", name
    needs = {name: [n["job"] for n in listing[name].get("needs", [])] for name in RETRAINING}
    # train -> publish -> shadow, each step only after the one before succeeded.
    assert needs == {
        "retrain": [],
        "retrain-report": ["retrain"],
        "retrain-publish": ["retrain"],
        "retrain-shadow": ["retrain-publish"],
    }


def test_a_trigger_on_another_branch_runs_nothing(gitlab_ci_local: str) -> None:
    listing = jobs(gitlab_ci_local, {**TRIGGER, "CI_COMMIT_BRANCH": "feature/x"})

    assert active(listing) == set()


def listed(done: subprocess.CompletedProcess[str]) -> list[str]:
    """Job names of `gitlab-ci-local --list` (a table below a header line)."""
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("name "))
    return [line.split()[0] for line in lines[header + 1 :] if line.strip()]


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        (MAIN, ALL_JOBS - {"cml-report"} - RETRAINING),
        (MERGE_REQUEST, EVERY_PIPELINE | {"cml-report"}),
        (TRIGGER, RETRAINING),
    ],
    ids=["push-main", "merge-request", "trigger"],
)
def test_plain_list_shows_each_pipeline(
    gitlab_ci_local: str, variables: dict[str, str], expected: set[str]
) -> None:
    done = gcl(gitlab_ci_local, "--list", variables=variables)

    assert done.returncode == 0, done.stderr
    names = listed(done)
    assert set(names) == expected
    assert len(names) == len(set(names))


# -- what the file says, beyond rules -------------------------------------------------------


@pytest.fixture(scope="module")
def ci() -> dict[str, Any]:
    return load_gitlab_ci()


def test_training_runs_on_the_large_runner_with_caches(ci: dict[str, Any]) -> None:
    train = ci["train"]
    assert "ml-large" in train["tags"]
    script = "\n".join(train["script"])
    assert "dvc repro" in script
    assert "python -m ml.report --output report.md" in script
    cache_paths = {p for entry in ci[".python"]["cache"] for p in entry["paths"]}
    assert {".cache/pip/", ".cache/pypoetry/"} <= cache_paths
    assert any(".dvc/cache/" in entry.get("paths", []) for entry in train["cache"][1:])
    assert "cml comment create report.md" in ci["cml-report"]["script"]


def test_publish_tags_the_experiment_with_the_commit(ci: dict[str, Any]) -> None:
    assert ci["variables"]["ML_API_EXPERIMENT_TAG"] == "$CI_COMMIT_SHORT_SHA"
    script = "\n".join(ci["publish"]["script"])
    assert "dvc push --remote s3" in script
    for target in ("$STAGING_REGISTRY_URL", "$PRODUCTION_REGISTRY_URL"):
        assert f'ML_API_REGISTRY_URL="{target}"' in script
    for name in ("STAGING_REGISTRY_URL", "PRODUCTION_REGISTRY_URL"):
        assert ci["variables"][name].startswith("s3://")


def test_image_builds_with_rootless_buildkit_and_no_docker_daemon(ci: dict[str, Any]) -> None:
    build = ci["build"]
    text = (ROOT / ".gitlab-ci.yml").read_text(encoding="utf-8")

    assert re.fullmatch(r"moby/buildkit:v[\d.]+-rootless", ci["variables"]["BUILDKIT_IMAGE"])
    assert build["image"] == {"name": "$BUILDKIT_IMAGE", "entrypoint": [""]}
    assert build["variables"]["BUILDKITD_FLAGS"] == "--oci-worker-no-process-sandbox"
    assert "services" not in build  # no docker:dind
    assert "kaniko" not in "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#")
    )
    assert "docker " not in "\n".join(build["script"])


def test_retraining_tags_its_experiment_and_shadows_it(ci: dict[str, Any]) -> None:
    assert ci[".retraining"]["variables"]["ML_API_EXPERIMENT_TAG"] == (
        "${CI_COMMIT_SHORT_SHA}-r${CI_PIPELINE_IID}"
    )
    retrain = "\n".join(ci["retrain"]["script"])
    assert 'dvc exp run --set-param "data.source=$DATA_SOURCE"' in retrain
    assert "python -m ml.report --output report.md --baseline HEAD" in retrain
    assert "params.yaml" in ci["retrain"]["artifacts"]["paths"]
    assert "cml comment create --target=commit report.md" in ci["retrain-report"]["script"]
    publish = "\n".join(ci["retrain-publish"]["script"])
    assert 'ML_API_REGISTRY_URL="$PRODUCTION_REGISTRY_URL" dvc repro --force' in publish
    shadow = "\n".join(ci["retrain-shadow"]["script"])
    assert 'python -m ml.shadow_deploy --url "$ML_API_URL" --tag "$ML_API_EXPERIMENT_TAG"' in shadow
    assert "ML_API_ADMIN_TOKEN" not in shadow  # read from the environment, never an argument
    assert ci["retrain-shadow"]["environment"]["name"] == "production"
    assert "replace_ml_model" not in shadow


def test_promotion_posts_the_tag_with_the_admin_token(ci: dict[str, Any]) -> None:
    script = "\n".join(ci[".promote"]["script"])
    assert '--request POST "$ML_API_URL/replace_ml_model"' in script
    assert '--header "Authorization: Bearer $ML_API_ADMIN_TOKEN"' in script
    assert "$ML_API_EXPERIMENT_TAG" in script


def test_no_credentials_in_the_file(ci: dict[str, Any]) -> None:
    secret_name = re.compile(r"TOKEN|SECRET|PASSWORD|ACCESS_KEY", re.IGNORECASE)
    defined = [name for name in ci["variables"] if secret_name.search(name)]
    for job in ci.values():
        if isinstance(job, dict) and isinstance(job.get("variables"), dict):
            defined += [name for name in job["variables"] if secret_name.search(name)]
    assert not defined, f"credentials must come from CI/CD variables, not the file: {defined}"


# -- run jobs for real (shell executor, in this checkout) ------------------------------------


RECORDING_BUILDCTL = """#!/bin/sh
# Stands in for BuildKit: writes its arguments, one per line, and the daemon flags.
printf '%s\\n' "$@" > "$BUILDCTL_RECORD"
printf 'BUILDKITD_FLAGS=%s\\n' "$BUILDKITD_FLAGS" >> "$BUILDCTL_RECORD"
"""


def test_build_job_logs_in_and_pushes_both_tags(gitlab_ci_local: str, tmp_path: Path) -> None:
    stub = tmp_path / "bin" / "buildctl-daemonless.sh"
    stub.parent.mkdir()
    stub.write_text(RECORDING_BUILDCTL, encoding="utf-8")
    stub.chmod(0o755)
    record = tmp_path / "buildctl-args.txt"
    variables = {
        **MAIN,
        "CI_PROJECT_DIR": str(ROOT),
        "CI_REGISTRY": "registry.example.test",
        "CI_REGISTRY_USER": "ci-user",
        "CI_REGISTRY_PASSWORD": "registry-password",
        "IMAGE_REPOSITORY": "registry.example.test/ml/ml-api",
        "CI_COMMIT_SHORT_SHA": "abc1234",
        "DOCKER_CONFIG": str(tmp_path / "docker"),
    }
    env = {
        **os.environ,
        "PATH": f"{stub.parent}{os.pathsep}{os.environ['PATH']}",
        "BUILDCTL_RECORD": str(record),
    }

    done = gcl(gitlab_ci_local, "--force-shell-executor", "build", variables=variables, env=env)

    assert done.returncode == 0, job_output(done)
    args = record.read_text(encoding="utf-8").splitlines()
    assert args[:3] == ["build", "--frontend", "dockerfile.v0"]
    assert ["--local", f"context={ROOT}", "--local", f"dockerfile={ROOT}"] == args[3:7]
    assert args[args.index("--output") + 1] == (
        'type=image,"name=registry.example.test/ml/ml-api:abc1234,'
        'registry.example.test/ml/ml-api:latest",push=true'
    )
    assert args[-1] == "BUILDKITD_FLAGS=--oci-worker-no-process-sandbox"
    config = json.loads((tmp_path / "docker" / "config.json").read_text(encoding="utf-8"))
    auth = config["auths"]["registry.example.test"]["auth"]
    assert base64.b64decode(auth).decode() == "ci-user:registry-password"


def test_shadow_job_adds_the_retrained_tag_keeping_the_primary(gitlab_ci_local: str) -> None:
    token = "ci-shadow-token-0123456789"
    live = {"primary": "1a2b3c4", "candidates": [{"tag": "5d6e7f8", "weight": 5}], "shadows": []}
    with DeploymentServer(dict(live), token) as server:
        variables = {
            **TRIGGER,
            "CI_PROJECT_DIR": str(ROOT),
            "CI_COMMIT_SHORT_SHA": "abc1234",
            "CI_PIPELINE_IID": "12",
            "ML_API_URL": server.url,
            "ML_API_ADMIN_TOKEN": token,
        }
        done = gcl(gitlab_ci_local, "--force-shell-executor", "retrain-shadow", variables=variables)

    assert done.returncode == 0, job_output(done)
    (put,) = server.state.puts
    assert put.authorization == f"Bearer {token}"
    assert put.body == {**live, "shadows": [{"tag": "abc1234-r12", "percent": 100}]}
    assert token not in done.stdout + done.stderr


def run_job(binary: str, job: str, extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # gitlab-ci-local gives jobs with an `image:` CI_PROJECT_DIR=/builds/...; the shell
    # executor runs them in this checkout, so caches must land here too.
    variables = {**MAIN, "CI_PROJECT_DIR": str(ROOT), **extra}
    return gcl(binary, "--force-shell-executor", job, variables=variables, timeout=1200)


def job_output(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n{done.stdout[-8000:]}\n{done.stderr[-4000:]}"


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_lint_job_passes(gitlab_ci_local: str) -> None:
    done = run_job(gitlab_ci_local, "lint", {})
    assert done.returncode == 0, job_output(done)
    assert re.search(r"PASS\s+lint", done.stdout), job_output(done)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_test_job_runs_the_selected_tests(gitlab_ci_local: str) -> None:
    # A small selection: the whole suite includes this test (no recursion).
    selection = "-p no:cacheprovider tests/delivery/test_k8s.py"
    done = run_job(gitlab_ci_local, "test", {"PYTEST_ARGS": selection})
    assert done.returncode == 0, job_output(done)
    assert re.search(r"\d+ passed", done.stdout), job_output(done)
    assert re.search(r"PASS\s+test", done.stdout), job_output(done)
