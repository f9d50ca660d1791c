"""The GitLab pipeline, evaluated by gitlab-ci-local: which jobs a merge request, a branch and
`main` get, and the lint and test jobs really run (shell executor, in this checkout)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.delivery.tools import ROOT

GCL_VERSION = "4.73.0"  # 4.74+ crashes on Node 20
GCL_PREFIX = ROOT / ".tools" / "node"
GCL_BIN = GCL_PREFIX / "node_modules" / ".bin" / "gitlab-ci-local"

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
}
EVERY_PIPELINE = {"lint", "test", "train"}
MAIN_ONLY = ALL_JOBS - EVERY_PIPELINE - {"cml-report"}

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
    binary: str, *args: str, variables: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    command = [binary, "--ignore-predefined-vars", ",".join(variables)]
    for name, value in variables.items():
        command += ["--variable", f"{name}={value}"]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, check=False, timeout=timeout, cwd=ROOT
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
    assert active(listing) == ALL_JOBS - {"cml-report"}
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


def test_plain_list_shows_the_main_pipeline(gitlab_ci_local: str) -> None:
    done = gcl(gitlab_ci_local, "--list", variables=MAIN)
    assert done.returncode == 0, done.stderr
    listed = {line.split()[0] for line in done.stdout.splitlines()[1:] if line.strip()}
    assert listed >= ALL_JOBS - {"cml-report"}


# -- what the file says, beyond rules -------------------------------------------------------


class _CiLoader(yaml.SafeLoader):
    """Reads GitLab's `!reference [job, key]` tags as plain lists."""


_CiLoader.add_constructor(
    "!reference",
    lambda loader, node: loader.construct_sequence(node),  # type: ignore[arg-type]
)


@pytest.fixture(scope="module")
def ci() -> dict[str, Any]:
    text = (ROOT / ".gitlab-ci.yml").read_text(encoding="utf-8")
    return dict(yaml.load(text, Loader=_CiLoader))  # noqa: S506 (safe subclass)


def test_training_runs_on_the_large_runner_with_caches(ci: dict[str, Any]) -> None:
    train = ci["train"]
    assert "ml-large" in train["tags"]
    script = "\n".join(train["script"])
    assert "dvc repro" in script
    assert "ml-api report --output report.md" in script
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
