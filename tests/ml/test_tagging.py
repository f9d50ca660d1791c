"""The experiment tag rule, on its own and against a real git repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from app.errors import InvalidTag
from app.registry.meta import TAG_PATTERN
from ml.params import params_hash
from ml.tagging import committed_params, experiment_tag, head_commit, resolve_tag

COMMIT = "0123456789abcdef0123456789abcdef01234567"
PARAMS = {"model": {"type": "logreg"}}
HGB = {"model": {"type": "hgb"}}


@pytest.mark.parametrize(
    ("override", "commit", "at_head", "now", "expected"),
    [
        (None, COMMIT, PARAMS, PARAMS, "0123456"),
        (None, COMMIT, PARAMS, HGB, f"0123456-p{params_hash(HGB)}"),
        (None, COMMIT, None, PARAMS, f"0123456-p{params_hash(PARAMS)}"),
        (None, None, None, PARAMS, f"dev-{params_hash(PARAMS)}"),
        ("release-7", COMMIT, PARAMS, HGB, "release-7"),
    ],
    ids=["as-committed", "changed-params", "params-not-committed", "no-commit", "override"],
)
def test_tag_rule(
    override: str | None,
    commit: str | None,
    at_head: dict[str, object] | None,
    now: dict[str, object],
    expected: str,
) -> None:
    tag = experiment_tag(override=override, commit=commit, params_now=now, params_at_head=at_head)

    assert tag == expected
    assert TAG_PATTERN.fullmatch(tag)


def test_invalid_override_is_refused() -> None:
    with pytest.raises(InvalidTag):
        experiment_tag(override="../etc", commit=COMMIT, params_now=PARAMS, params_at_head=None)


def git(repo: Path, *args: str) -> str:
    completed = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return completed.stdout.strip()


def test_tag_follows_the_repository_state(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "params.yaml").write_text("model:\n  type: logreg\n", encoding="utf-8")

    assert head_commit(tmp_path) is None
    assert resolve_tag(tmp_path, PARAMS, {}).tag == f"dev-{params_hash(PARAMS)}"

    git(tmp_path, "add", "params.yaml")
    git(tmp_path, "commit", "-q", "-m", "params")
    commit = git(tmp_path, "rev-parse", "HEAD")

    assert committed_params(tmp_path) == PARAMS
    assert resolve_tag(tmp_path, PARAMS, {}) == resolve_tag(tmp_path, PARAMS, {"x": "y"})
    assert resolve_tag(tmp_path, PARAMS, {}).tag == commit[:7]
    assert resolve_tag(tmp_path, PARAMS, {}).git_commit == commit
    assert resolve_tag(tmp_path, HGB, {}).tag == f"{commit[:7]}-p{params_hash(HGB)}"
    assert resolve_tag(tmp_path, HGB, {"ML_API_EXPERIMENT_TAG": "mine"}).tag == "mine"


def test_outside_git_there_is_no_commit(tmp_path: Path) -> None:
    assert head_commit(tmp_path) is None
    assert committed_params(tmp_path) is None
