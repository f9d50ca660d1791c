"""Security properties: token checks, no token in logs, no path escape, body limits, CORS,
no internals in error bodies.

Covered elsewhere and not repeated: tag validation in the registry itself
(tests/app/registry/test_store.py), 401/403 on the management endpoint and a Content-Length
over the limit (tests/app/api/test_admin.py, test_predict.py), and the non-root ``USER`` of the
image (tests/delivery/test_dockerfile.py).
"""

from __future__ import annotations

import hmac
import select
import shutil
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
from dependency_injector import providers

from app.container import Container
from app.errors import Unauthorized
from app.security import AdminTokenChecker
from app.settings import Settings
from tests.conftest import ADMIN_TOKEN, app_client
from tests.e2e.server import Server
from tests.models import sample_rows

SECRET = "secret internal detail /srv/app/registry/credentials.json"


# -- the token check ------------------------------------------------------------------
class RecordingCompare:
    """Delegates to the real ``hmac.compare_digest`` and remembers what it compared."""

    def __init__(self) -> None:
        self.real = hmac.compare_digest
        self.calls: list[tuple[bytes, bytes]] = []

    def __call__(self, a: bytes, b: bytes) -> bool:
        self.calls.append((a, b))
        return self.real(a, b)


@pytest.fixture
def recorded_compare(monkeypatch: pytest.MonkeyPatch) -> RecordingCompare:
    recorder = RecordingCompare()
    monkeypatch.setattr("app.security.hmac.compare_digest", recorder)
    return recorder


@pytest.mark.parametrize(
    "presented",
    [
        ADMIN_TOKEN[:-1] + "x",  # same length, last character differs
        "x" + ADMIN_TOKEN[1:],  # same length, first character differs
        ADMIN_TOKEN[:8],  # a prefix
        ADMIN_TOKEN + "0",  # a longer string starting with the token
        "é" * 5,  # not ASCII
    ],
)
def test_wrong_tokens_are_compared_in_constant_time_and_refused(
    recorded_compare: RecordingCompare, presented: str
) -> None:
    checker = AdminTokenChecker(Settings(admin_token=ADMIN_TOKEN).admin_token)
    with pytest.raises(Unauthorized) as refused:
        checker.check(f"Bearer {presented}")
    assert recorded_compare.calls == [(presented.encode(), ADMIN_TOKEN.encode())]
    assert presented not in refused.value.message


def test_right_token_is_accepted_through_compare_digest(
    recorded_compare: RecordingCompare,
) -> None:
    checker = AdminTokenChecker(Settings(admin_token=ADMIN_TOKEN).admin_token)
    checker.check(f"Bearer {ADMIN_TOKEN}")
    checker.check(f"bearer {ADMIN_TOKEN}")
    assert len(recorded_compare.calls) == 2


def test_settings_never_show_the_token() -> None:
    settings = Settings(admin_token=ADMIN_TOKEN)
    assert ADMIN_TOKEN not in repr(settings)
    assert ADMIN_TOKEN not in str(settings.model_dump())


# -- tags cannot escape the registry, whatever the encoding -------------------------------
TRAVERSALS = [
    "..%2F..",
    "..%2F..%2Factive",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "../../etc/passwd",
    "..\\..\\windows",
    "base/../boost",
    "experiments/boost",
    "/etc/passwd",
    "~root",
    "..",
    ".",
    "base\x00",
    "base\n",
    "base%00",
    "ｂａｓｅ",  # fullwidth letters
    "base.skops",
]


def _snapshot(root: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in root.rglob("*") if path.is_file()}


async def test_traversal_tags_are_refused_and_nothing_changes(
    client: httpx.AsyncClient, auth: dict[str, str], registry_dir: Path
) -> None:
    before = _snapshot(registry_dir)
    raw_escape = b'{"tag": "\\u002e\\u002e\\u002f\\u002e\\u002e\\u002factive"}'  # "../../active"
    responses = [
        await client.post("/replace_ml_model", json={"tag": tag}, headers=auth)
        for tag in TRAVERSALS
    ]
    responses.append(
        await client.post(
            "/replace_ml_model",
            content=raw_escape,
            headers=auth | {"content-type": "application/json"},
        )
    )
    for tag, response in zip([*TRAVERSALS, "../../active"], responses, strict=True):
        assert response.status_code == 422, (tag, response.text)
        assert response.json()["error"]["code"] in {"invalid_tag", "invalid_request"}, tag
    assert _snapshot(registry_dir) == before
    served = await client.post("/predict", json={"instances": sample_rows(1)})
    assert served.json()["model_tag"] == "base"


# -- CORS ---------------------------------------------------------------------------------
ORIGIN = "https://dashboard.example.org"


async def _cors_responses(settings: Settings, origin: str) -> list[httpx.Response]:
    """A preflight, a simple GET and a POST from ``origin``."""
    async with app_client(settings) as c:
        preflight = await c.options(
            "/predict",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        listed = await c.get("/get_experiment_metas", headers={"Origin": origin})
        predicted = await c.post(
            "/predict", json={"instances": sample_rows(1)}, headers={"Origin": origin}
        )
    assert listed.status_code == predicted.status_code == 200
    return [preflight, listed, predicted]


async def test_cors_is_off_by_default(settings: Settings) -> None:
    assert settings.cors_origins == []
    for response in await _cors_responses(settings, ORIGIN):
        assert "access-control-allow-origin" not in response.headers
        assert "access-control-allow-credentials" not in response.headers


async def test_cors_allows_exactly_the_configured_origins(settings: Settings) -> None:
    configured = settings.model_copy(update={"cors_origins": [ORIGIN]})
    preflight, *simple = await _cors_responses(configured, ORIGIN)
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    for response in simple:
        assert response.headers["access-control-allow-origin"] == ORIGIN
    for response in await _cors_responses(configured, "https://evil.example.com"):
        assert "access-control-allow-origin" not in response.headers


# -- error bodies carry no internals ------------------------------------------------------
class ExplodingService:
    """Stands in for the prediction service: whatever the route calls fails with internals."""

    def __getattr__(self, name: str) -> Callable[..., NoReturn]:
        def explode(*args: Any, **kwargs: Any) -> NoReturn:
            raise RuntimeError(SECRET)

        return explode


@pytest.fixture
async def exploding_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    container = Container(settings=settings)
    container.prediction_service.override(providers.Object(ExplodingService()))
    # The server error middleware re-raises after answering, as it should for the server's
    # log; the transport must hand us the answer instead of raising.
    async with app_client(settings, container, raise_app_exceptions=False) as http:
        yield http


@pytest.mark.parametrize("upload", [False, True], ids=["json", "csv-upload"])
async def test_unexpected_error_is_a_generic_500_and_logged_in_full(
    exploding_client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, upload: bool
) -> None:
    if upload:
        csv = b"island,sex\nBiscoe,male\n"
        response = await exploding_client.post("/predict", files={"file": ("a.csv", csv)})
    else:
        response = await exploding_client.post("/predict", json={"instances": sample_rows(1)})
    assert response.status_code == 500
    assert response.json() == {
        "error": {"code": "internal_error", "message": "internal server error"}
    }
    assert "secret" not in response.text
    assert "Traceback" not in response.text
    # Operators still get the whole story, in the server's log only.
    assert SECRET in caplog.text
    assert "Traceback" in caplog.text


# -- a real server: no token in its logs, and bodies refused while streaming ---------------
MAX_BYTES = 65_536


@pytest.fixture(scope="module")
def debug_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("security")


@pytest.fixture(scope="module")
def debug_server(seed_registry: Path, debug_root: Path) -> Iterator[Server]:
    """One ``ml-api serve`` at debug level, its output in ``server.log``, a small body limit."""
    shutil.copytree(seed_registry, debug_root / "registry")
    server = Server(
        str(debug_root / "registry"),
        log_path=debug_root / "server.log",
        env={"ML_API_LOG_LEVEL": "debug", "ML_API_MAX_UPLOAD_BYTES": str(MAX_BYTES)},
    )
    with server:
        yield server


@pytest.mark.e2e
def test_tokens_never_reach_the_logs(debug_server: Server, debug_root: Path) -> None:
    wrong = ["wrong-token-wrong-token-1", ADMIN_TOKEN[:-1] + "Z", ADMIN_TOKEN + "-longer"]
    with debug_server.client() as http:
        outcomes = []
        for tag in ("boost", "base"):
            outcomes.append(
                http.post(
                    "/replace_ml_model",
                    json={"tag": tag},
                    headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                ).status_code
            )
            for token in wrong:
                response = http.post(
                    "/replace_ml_model",
                    json={"tag": tag},
                    headers={"Authorization": f"Bearer {token}"},
                )
                outcomes.append(response.status_code)
                assert token not in response.text
        # A swap that fails after the token check is logged too; still no token.
        failed = http.post(
            "/replace_ml_model",
            json={"tag": "missing"},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert failed.status_code == 404
        assert http.get("/v2/health/ready").json()["model_tag"] == "base"
    assert outcomes == [200, 401, 401, 401] * 2
    # The log is written as it happens; wait for the last swap's line rather than guessing.
    deadline = time.monotonic() + 10
    while (
        "boost -> base" not in (debug_root / "server.log").read_text(errors="replace")
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    log = (debug_root / "server.log").read_text(errors="replace")
    assert "DEBUG" in log  # debug level really was on
    assert "swapped model base -> boost" in log
    assert "boost -> base" in log
    for secret in [ADMIN_TOKEN, *wrong]:
        assert secret not in log


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_endless_chunked_body_is_refused_while_streaming(debug_server: Server) -> None:
    """A real socket, a chunked body that never ends: 413 must come back all the same."""
    chunk = b'{"island": "Biscoe", "sex": "male"},' * 100
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    reply = b""
    with socket.create_connection(("127.0.0.1", debug_server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"ins\r\n'
        )
        while sent < 100 * MAX_BYTES:
            sock.sendall(framed)
            sent += len(chunk)
            readable, _, _ = select.select([sock], [], [], 0.02)
            if readable:
                break
        # The answer, up to the end of its body (the server closes the connection after it).
        while piece := sock.recv(65_536):
            reply += piece
            if b"}}" in reply:
                break
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"ML_API_MAX_UPLOAD_BYTES" in reply
    # Refused once the limit was crossed, long before anything like the whole body.
    assert sent <= 4 * MAX_BYTES, sent
    with debug_server.client() as http:
        assert http.post("/predict", json={"instances": sample_rows(1)}).status_code == 200
