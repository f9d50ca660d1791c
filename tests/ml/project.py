"""A throw-away copy of the project as its own git + DVC repository, and the commands on it.

The copy holds what a fresh clone holds for the pipeline: code, DVC and git configuration,
params, and the committed results (``dvc.lock``, ``metrics/``, ``plots/``); no data, models or
DVC cache."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# What the pipeline needs from the project: its code, its DVC and git configuration.
PROJECT_FILES = (
    "dvc.yaml",
    "dvc.lock",
    "params.yaml",
    ".dvcignore",
    ".gitignore",
    ".dvc/config",
    ".dvc/.gitignore",
)
PROJECT_DIRS = ("app", "ml", "metrics", "plots")
COMMAND_TIMEOUT = 240


@dataclass(frozen=True)
class Project:
    root: Path
    registry: Path
    env: dict[str, str]

    def run(
        self, *args: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        completed = subprocess.run(
            list(args),
            cwd=self.root,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            check=False,
            timeout=COMMAND_TIMEOUT,
        )
        if check and completed.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {completed.returncode}\n"
                f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"
            )
        return completed

    def dvc(
        self, *args: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, "-m", "dvc", *args, check=check, env=env)

    def git(self, *args: str) -> str:
        return self.run("git", *args).stdout

    def commit_all(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD").strip()

    def read_json(self, relative: str) -> Any:
        import json

        return json.loads((self.root / relative).read_text(encoding="utf-8"))

    def update_params(self, changes: dict[str, dict[str, Any]]) -> None:
        path = self.root / "params.yaml"
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        for section, values in changes.items():
            document[section].update(values)
        path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


def pipeline_env(registry: Path, pycache: Path) -> dict[str, str]:
    """Environment for DVC and the stages: this venv's python first, a private registry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ML_API_", "DVC_"))}
    # Stage processes import scikit-learn and pandas; caching their bytecode (outside the
    # venv) saves seconds per process.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPYCACHEPREFIX=str(pycache),
        ML_API_REGISTRY_URL=str(registry),
        DVC_NO_ANALYTICS="1",
        GIT_CONFIG_NOSYSTEM="1",
    )
    return env


def make_project(base: Path, pycache: Path) -> Project:
    """Copy the pipeline into ``base/repo`` and make it a git repository on branch main."""
    root = base / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in PROJECT_DIRS:
        shutil.copytree(PROJECT_ROOT / name, root / name, ignore=ignore)
    for name in PROJECT_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT_ROOT / name, root / name)
    project = Project(
        root=root, registry=base / "registry", env=pipeline_env(base / "registry", pycache)
    )
    project.git("init", "-q", "-b", "main")
    project.git("config", "user.name", "ml tests")
    project.git("config", "user.email", "ml-tests@example.invalid")
    project.git("config", "commit.gpgsign", "false")
    return project
