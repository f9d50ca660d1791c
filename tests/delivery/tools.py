"""Where the delivery tests find the repository and the command-line tools they drive."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def find_tool(name: str) -> str | None:
    """A tool from the project's virtualenv (next to this Python), else from PATH."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which(name)


class _CiLoader(yaml.SafeLoader):
    """Reads GitLab's `!reference [job, key]` tags as plain lists."""


_CiLoader.add_constructor(
    "!reference",
    lambda loader, node: loader.construct_sequence(node),  # type: ignore[arg-type]
)


def load_gitlab_ci() -> dict[str, Any]:
    """.gitlab-ci.yml as data (`!reference` tags kept as their [job, key] lists)."""
    text = (ROOT / ".gitlab-ci.yml").read_text(encoding="utf-8")
    return dict(yaml.load(text, Loader=_CiLoader))  # noqa: S506 (safe subclass)
