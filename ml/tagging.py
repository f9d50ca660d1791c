"""The experiment tag: where a published model came from, readable at a glance.

* ``ML_API_EXPERIMENT_TAG`` when set (it must be a valid tag);
* else the short commit hash when params.yaml is as committed;
* else ``<short hash>-p<params hash>``: ``dvc exp run -S ...`` and local edits change the
  params, so each parameter set gets its own tag;
* else (no commit yet) ``dev-<params hash>``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.registry import validate_tag
from ml.errors import ParamsError
from ml.params import PARAMS_FILE, params_hash, parse_params_text

TAG_ENV = "ML_API_EXPERIMENT_TAG"
SHORT_HASH = 7


@dataclass(frozen=True)
class TagInfo:
    tag: str
    git_commit: str | None


def experiment_tag(
    *,
    override: str | None,
    commit: str | None,
    params_now: Mapping[str, Any],
    params_at_head: Mapping[str, Any] | None,
) -> str:
    """Apply the tag rule (module docstring); raises InvalidTag for a bad override."""
    if override:
        return validate_tag(override)
    digest = params_hash(dict(params_now))
    if commit is None:
        return f"dev-{digest}"
    if params_at_head is not None and dict(params_at_head) == dict(params_now):
        return commit[:SHORT_HASH]
    return f"{commit[:SHORT_HASH]}-p{digest}"


def resolve_tag(repo: Path, params_now: Mapping[str, Any], environ: Mapping[str, str]) -> TagInfo:
    commit = head_commit(repo)
    at_head = committed_params(repo) if commit else None
    tag = experiment_tag(
        override=environ.get(TAG_ENV, "").strip() or None,
        commit=commit,
        params_now=params_now,
        params_at_head=at_head,
    )
    return TagInfo(tag=tag, git_commit=commit)


def head_commit(repo: Path) -> str | None:
    """The full hash of HEAD, None outside git or before the first commit."""
    output = _git(repo, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    if output is None:
        return None
    return output.strip() or None


def committed_params(repo: Path) -> dict[str, Any] | None:
    """params.yaml as committed at HEAD (parsed), None when HEAD has none or it is broken."""
    text = _git(repo, "show", f"HEAD:./{PARAMS_FILE.as_posix()}")
    if text is None:
        return None
    try:
        return parse_params_text(text)
    except ParamsError:
        return None  # a broken committed file only means "differs": the workspace one is valid


def _git(repo: Path, *args: str) -> str | None:
    try:
        completed = subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, check=False, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return completed.stdout if completed.returncode == 0 else None
