"""The retraining pipeline's last step: a published experiment joins the live deployment as a
shadow; the primary and the candidates stay as they were. Against a real HTTP server on
127.0.0.1 that records what it was sent."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from ml import shadow_deploy
from ml.shadow_deploy import with_shadow
from tests.ml.deployment_server import DeploymentServer
from tests.ml.project import PROJECT_ROOT

TOKEN = "shadow-test-token-0123456789"
LIVE = {
    "primary": "1a2b3c4",
    "candidates": [{"tag": "5d6e7f8", "weight": 10}],
    "shadows": [{"tag": "0f0f0f0-r3", "percent": 20}],
    "guard": {"enabled": True, "min_requests": 500},
    "analysis": {"alpha": 0.01},
}


@pytest.fixture
def server() -> Iterator[DeploymentServer]:
    with DeploymentServer(
        {k: list(v) if isinstance(v, list) else v for k, v in LIVE.items()}, TOKEN
    ) as running:
        yield running


def run(
    server: DeploymentServer,
    monkeypatch: pytest.MonkeyPatch,
    *args: str,
    token: str = TOKEN,
) -> None:
    monkeypatch.setenv("ML_API_ADMIN_TOKEN", token)
    shadow_deploy.main(["--url", server.url, *args])


def test_adds_the_shadow_and_keeps_primary_and_candidates(
    server: DeploymentServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run(server, monkeypatch, "--tag", "1a2b3c4-r7")

    (put,) = server.state.puts
    assert put.path == "/deployment"
    assert put.authorization == f"Bearer {TOKEN}"
    assert put.body == {
        "primary": "1a2b3c4",
        "candidates": [{"tag": "5d6e7f8", "weight": 10}],
        "shadows": [{"tag": "0f0f0f0-r3", "percent": 20}, {"tag": "1a2b3c4-r7", "percent": 100}],
        # The guard's and the analysis' settings are not reset to their defaults.
        "guard": {"enabled": True, "min_requests": 500},
        "analysis": {"alpha": 0.01},
    }
    assert [r.method for r in server.state.requests] == ["GET", "PUT", "GET"]
    assert server.state.spec["primary"] == "1a2b3c4"
    out = capsys.readouterr().out
    assert "1a2b3c4-r7 shadows 100% of the traffic; primary 1a2b3c4 unchanged" in out


def test_running_again_changes_nothing(
    server: DeploymentServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(server, monkeypatch, "--tag", "1a2b3c4-r7", "--percent", "50")
    spec = server.state.spec

    run(server, monkeypatch, "--tag", "1a2b3c4-r7", "--percent", "50")

    assert len(server.state.puts) == 1
    assert server.state.spec == spec


def test_a_new_percent_replaces_the_tags_entry() -> None:
    spec = {**LIVE, "shadows": [{"tag": "x-r1", "percent": 100}, {"tag": "y", "percent": 5}]}

    body = with_shadow(spec, "x-r1", 30)

    assert body["shadows"] == [{"tag": "y", "percent": 5}, {"tag": "x-r1", "percent": 30}]


@pytest.mark.parametrize(
    ("tag", "message"),
    [("1a2b3c4", "is the primary already"), ("5d6e7f8", "is a candidate")],
)
def test_never_touches_the_primary_or_a_candidate(
    server: DeploymentServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tag: str,
    message: str,
) -> None:
    with pytest.raises(SystemExit) as exited:
        run(server, monkeypatch, "--tag", tag)

    assert exited.value.code == 1
    assert message in capsys.readouterr().err
    assert server.state.puts == []


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (
            lambda s: setattr(s, "refuse_put", (409, {"error": {"message": "unknown tag"}})),
            r"PUT http://127\.0\.0\.1:\d+/deployment answered 409: .*unknown tag",
        ),
        (
            lambda s: setattr(s, "replaced_after_put", {**LIVE, "primary": "someone-else"}),
            r"the deployment changed while the shadow was added: primary 'someone-else'",
        ),
        (
            lambda s: setattr(s, "spec", {"candidates": [], "shadows": []}),
            r"the deployment spec has no primary",
        ),
    ],
    ids=["refused", "changed-meanwhile", "no-primary"],
)
def test_failures_exit_1_with_one_line(
    server: DeploymentServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    setup: Any,
    message: str,
) -> None:
    setup(server.state)

    with pytest.raises(SystemExit) as exited:
        run(server, monkeypatch, "--tag", "1a2b3c4-r7")

    assert exited.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("shadow-deploy: error: ")
    assert re.search(message, line), line


def test_a_wrong_token_is_reported_without_being_shown(
    server: DeploymentServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        run(server, monkeypatch, "--tag", "1a2b3c4-r7", token="not-the-token-at-all")

    err = capsys.readouterr().err
    assert "GET" in err
    assert "answered 401" in err
    assert "not-the-token-at-all" not in err
    assert server.state.puts == []


def test_without_a_token_nothing_is_sent(
    server: DeploymentServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        run(server, monkeypatch, "--tag", "1a2b3c4-r7", token="")

    assert "ML_API_ADMIN_TOKEN is not set" in capsys.readouterr().err
    assert server.state.requests == []


def test_unreachable_service_names_the_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ML_API_ADMIN_TOKEN", TOKEN)
    with DeploymentServer(dict(LIVE), TOKEN) as stopped:
        url = stopped.url

    with pytest.raises(SystemExit):
        shadow_deploy.main(["--url", url, "--tag", "1a2b3c4-r7"])

    assert f"GET {url}/deployment: ConnectError" in capsys.readouterr().err


def test_module_runs_as_the_ci_job_calls_it(server: DeploymentServer) -> None:
    env = {**os.environ, "ML_API_ADMIN_TOKEN": TOKEN, "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "ml.shadow_deploy", "--url", server.url, "--tag", "1a2b3c4-r9"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=env,
    )

    assert done.returncode == 0, done.stderr
    assert server.state.spec["shadows"][-1] == {"tag": "1a2b3c4-r9", "percent": 100}
    assert TOKEN not in done.stdout + done.stderr
