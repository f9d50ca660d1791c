"""Property-based run of schemathesis against the OpenAPI spec of a real ``ml-api serve``:
no 5xx, every response matches its documented schema, status code and content type."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ADMIN_TOKEN
from tests.e2e.server import Server

pytestmark = pytest.mark.e2e

CHECKS = [
    "not_a_server_error",
    "response_schema_conformance",
    "status_code_conformance",
    "content_type_conformance",
]
SEED = 20261121
EXAMPLES_PER_OPERATION = 60


@pytest.mark.timeout(300)
def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    registry_dir: Path, tmp_path: Path
) -> None:
    st = Path(sys.executable).parent / "st"
    # Path parameters that exist, so fuzzing reaches the OIP logic past "no such model": the
    # model name, a loaded version, and a tag to load (the primary: a swap to itself) or unload
    # (the primary: 409). Random names and tags are 404s, tested in test_oip.py.
    (tmp_path / "schemathesis.toml").write_text(
        '[parameters]\n"path.name" = "ml-api"\n"path.version" = "base"\n"path.tag" = "base"\n'
    )
    with Server(str(registry_dir)) as server:
        run = subprocess.run(
            [
                str(st),
                "--config-file",
                "schemathesis.toml",
                "run",
                f"{server.url}/openapi.json",
                "--checks",
                ",".join(CHECKS),
                # The management endpoint is fuzzed with a valid token, so its checks past
                # authentication are reached; wrong tokens are tested in test_security.py.
                "--header",
                f"Authorization: Bearer {ADMIN_TOKEN}",
                "--max-examples",
                str(EXAMPLES_PER_OPERATION),
                "--seed",
                str(SEED),
                "--workers",
                "1",
                "--request-timeout",
                "20",
                "--no-color",
            ],
            cwd=tmp_path,  # its hypothesis database stays out of the project
            capture_output=True,
            text=True,
            timeout=270,  # 19 operations since the OIP endpoints
            check=False,
        )
        with server.client() as http:  # and the service is still fine afterwards
            assert http.get("/v2/health/ready").status_code == 200
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    # Schemathesis may still warn that most generated bodies are refused (random rows rarely
    # fit a model's schema); a warning is no finding. Failures and errors set the exit code.
    summary = run.stdout.rsplit("Test cases:", 1)[-1]
    assert " passed" in summary
    assert "failed" not in summary
    assert "error" not in summary
