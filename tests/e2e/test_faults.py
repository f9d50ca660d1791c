"""Faults: the registry out of reach, hostile or corrupt registry content, a process killed
in the middle of a swap. In every case exactly one consistent model serves.

Covered elsewhere and not repeated: a model file whose sha256 does not match
(tests/app/api/test_admin.py), a malformed meta.json (tests/app/api/test_experiments.py lists it
as broken), atomic local pointer writes and an unreadable spec in the deployment
(tests/app/registry/test_store.py, tests/app/serving/test_deployment.py).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import orjson
import pytest
import skops.io as sio
from dependency_injector import providers
from prometheus_client import REGISTRY
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from app.container import Container
from app.registry.meta import ExperimentMeta
from app.registry.model_file import sha256_hex
from app.registry.store import ModelRegistry
from app.serving.inputs import InputLimits
from app.serving.model import LoadedModel, load_verified
from app.settings import Settings
from tests.conftest import ADMIN_TOKEN, app_client
from tests.e2e.server import Server, auth_headers
from tests.local_server import free_port, wait_for_port, wait_until
from tests.models import sample_rows, trained

ROW = sample_rows(1)
LIMITS = InputLimits(max_rows=100, max_string_length=256)
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def served_tag(http: httpx.Client) -> str:
    response = http.post("/predict", json={"instances": ROW})
    assert response.status_code == 200, response.text
    tag: str = response.json()["model_tag"]
    return tag


# -- the registry out of reach ------------------------------------------------------------
class MotoServer:
    """A dedicated S3 server on a given port of 127.0.0.1, to start and stop at will."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "moto_server"),
                "-H",
                "127.0.0.1",
                "-p",
                str(self.port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def upload_registry(self, root: Path, bucket: str, prefix: str) -> None:
        """Create the bucket and publish ``root`` into it, experiments first, pointer last."""
        client = boto3.client("s3", endpoint_url=self.endpoint, **_boto_credentials())
        client.create_bucket(Bucket=bucket)
        files = sorted(p for p in root.rglob("*") if p.is_file())
        files.sort(key=lambda p: p.name == "active.json")
        for path in files:
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(root).as_posix()}")


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_ENV["AWS_DEFAULT_REGION"],
    }


@pytest.fixture
def reserved_moto() -> Iterator[MotoServer]:
    moto = MotoServer(free_port())  # nothing listens there until the test starts it
    try:
        yield moto
    finally:
        moto.stop()


@pytest.mark.e2e
@pytest.mark.slow
def test_registry_outage_at_start_and_during_a_swap(
    seed_registry: Path, reserved_moto: MotoServer, tmp_path: Path
) -> None:
    """Start with no S3 server at all: live but not ready, then ready once the registry
    appears, without a restart. Then S3 goes away: a swap fails with a clean 503 and the
    loaded model keeps serving."""
    bucket = f"reg-{uuid.uuid4().hex[:12]}"
    log = tmp_path / "server.log"
    env = {
        **S3_ENV,
        "AWS_ENDPOINT_URL": reserved_moto.endpoint,
        "ML_API_STARTUP_RETRY_MAX_SECONDS": "1",
    }
    server = Server(f"s3://{bucket}/models", env=env, log_path=log, poll_seconds=0.5)
    try:
        server.start(wait_ready=False)
        with server.client() as http:
            assert http.get("/v2/health/live").status_code == 200
            assert http.get("/v2/health/ready").status_code == 503
            refused = http.post("/predict", json={"instances": ROW})
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "no_active_model"

            # The worker goes on trying with back-off (each attempt spends about a second in
            # the S3 client's own retries); the registry appears only after a failed retry.
            wait_until(
                lambda: "no model loaded yet; retrying" in log.read_text(),
                timeout=60,
                what="a failed retry is logged",
            )
            reserved_moto.start()
            reserved_moto.upload_registry(seed_registry, bucket, "models")
            wait_until(
                lambda: http.get("/v2/health/ready").status_code == 200,
                timeout=60,
                what="ready after the registry appeared",
            )
            assert served_tag(http) == "base"

            before = http.get("/v2/health/ready").json()
            reserved_moto.stop()
            swap = http.post("/replace_ml_model", json={"tag": "boost"}, headers=auth_headers())
            assert swap.status_code == 503, swap.text
            error = swap.json()["error"]
            assert error["code"] == "registry_unavailable"
            assert "registry unreachable" in error["message"]
            # Still ready, on the very model installed before the outage.
            assert http.get("/v2/health/ready").json() == before
            assert before["model_tag"] == "base"
            assert served_tag(http) == "base"
    finally:
        server.stop()


# -- hostile registry content -------------------------------------------------------------
CALLS: list[Any] = []


def _exfiltrate(x: Any) -> Any:
    """What an attacker's model would run on load or predict; it must never run."""
    CALLS.append(x)
    return x


def publish_with_untrusted_type(registry: ModelRegistry, tag: str) -> ExperimentMeta:
    """An experiment whose model file is consistent (sha256 matches meta.json) but holds a
    function the service does not trust, inside an otherwise working pipeline."""
    model = Pipeline(
        [("sneak", FunctionTransformer(func=_exfiltrate)), ("model", trained("logreg"))]
    )
    data = sio.dumps(model)
    fields = registry.read_meta("base").model_dump()
    fields.pop("onnx", None)  # the skops file is what is at stake here
    fields.update(
        tag=tag,
        model_sha256=sha256_hex(data),
        trusted_types=sorted(sio.get_untrusted_types(data=data)),
    )
    meta = ExperimentMeta.model_validate(fields)
    registry.write_experiment(meta, data)
    return meta


async def test_model_with_untrusted_type_is_refused_and_old_model_serves(
    client: httpx.AsyncClient, auth: dict[str, str], registry: ModelRegistry
) -> None:
    publish_with_untrusted_type(registry, "sneaky")
    failures = REGISTRY.get_sample_value("ml_api_model_swaps_total", {"result": "failure"}) or 0
    response = await client.post("/replace_ml_model", json={"tag": "sneaky"}, headers=auth)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "model_rejected"
    assert "untrusted types" in error["message"]
    assert f"{__name__}._exfiltrate" in error["message"]
    assert CALLS == []
    assert (
        REGISTRY.get_sample_value("ml_api_model_swaps_total", {"result": "failure"}) == failures + 1
    )
    pointer = registry.read_active()
    assert pointer is not None
    assert pointer.tag == "base"
    served = await client.post("/predict", json={"instances": ROW})
    assert served.json()["model_tag"] == "base"


class FlakyLoader:
    """Fails to load one tag with an unexpected error (not a domain error) until disarmed,
    as a bug in a library or a runtime would; loads everything else for real."""

    def __init__(self, failing_tag: str) -> None:
        self.failing_tag = failing_tag
        self.armed = True
        self.failures = 0

    def __call__(self, registry: ModelRegistry, tag: str, limits: InputLimits) -> LoadedModel:
        if self.armed and tag == self.failing_tag:
            self.failures += 1
            raise RuntimeError(f"unexpected failure while loading {tag}")
        return load_verified(registry, tag, limits)


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` on the event loop (the deployment offers no event to await)."""
    try:
        async with asyncio.timeout(10):
            while not condition():  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"not within 10 s: {what}") from None


async def test_registry_follower_survives_an_unexpected_load_error(
    settings: Settings, registry: ModelRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker whose background follower died would never follow a swap again."""
    loader = FlakyLoader("boost")
    container = Container(settings=settings.model_copy(update={"poll_seconds": 0.02}))
    container.model_loader.override(providers.Object(loader))
    deployment = container.deployment()
    await deployment.sync_with_registry()
    follower = asyncio.create_task(container.lifecycle().follow_registry())
    try:
        registry.write_active("boost", updated_by="other-worker", previous_tag="base")
        await _until(lambda: loader.failures >= 3, "the follower keeps trying")
        assert deployment.plan().primary.tag == "base"
        loader.armed = False
        await _until(lambda: deployment.plan().spec.primary == "boost", "the follower catches up")
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
    assert "unexpected failure while loading boost" in caplog.text


async def test_swap_with_an_unexpected_load_error_is_a_counted_failure(
    settings: Settings, registry: ModelRegistry, auth: dict[str, str]
) -> None:
    container = Container(settings=settings)
    container.model_loader.override(providers.Object(FlakyLoader("boost")))
    failures = REGISTRY.get_sample_value("ml_api_model_swaps_total", {"result": "failure"}) or 0
    async with app_client(settings, container, raise_app_exceptions=False) as http:
        response = await http.post("/replace_ml_model", json={"tag": "boost"}, headers=auth)
        served = await http.post("/predict", json={"instances": ROW})
    assert response.status_code == 500
    assert response.json()["error"] == {
        "code": "internal_error",
        "message": "internal server error",
    }
    assert (
        REGISTRY.get_sample_value("ml_api_model_swaps_total", {"result": "failure"}) == failures + 1
    )
    assert served.json()["model_tag"] == "base"
    pointer = registry.read_active()
    assert pointer is not None
    assert pointer.tag == "base"


CORRUPTIONS = [
    pytest.param(b"", id="empty"),
    pytest.param(b'{"tag": "boost", "updated_at": "2026-0', id="half-written"),
    pytest.param(b"{half", id="not-json"),
    pytest.param(b"\x00" * 64, id="zeros"),
    pytest.param(b'{"tag": "../boost", "updated_at": "2026-01-01T00:00:00Z"}', id="unsafe-tag"),
    pytest.param(b'["boost"]', id="wrong-shape"),
]


@pytest.fixture(scope="module")
def pointer_server(
    seed_registry: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Path, Path]]:
    """A running server whose registry folder the tests damage; and its log."""
    root = tmp_path_factory.mktemp("pointer")
    registry_dir = root / "registry"
    shutil.copytree(seed_registry, registry_dir)
    log = root / "server.log"
    with Server(str(registry_dir), log_path=log, poll_seconds=0.2) as server:
        yield server, registry_dir, log


@pytest.mark.e2e
@pytest.mark.parametrize("content", CORRUPTIONS)
def test_corrupt_pointer_on_a_running_server_keeps_the_model_and_is_logged(
    pointer_server: tuple[Server, Path, Path], content: bytes
) -> None:
    server, registry_dir, log = pointer_server
    pointer = registry_dir / "active.json"
    good = pointer.read_bytes()

    def complaints() -> int:
        return log.read_text(errors="replace").count("deployment spec unreadable")

    before = complaints()
    try:
        pointer.write_bytes(content)  # in place, not atomic: as a broken writer would
        wait_until(lambda: complaints() >= before + 2, timeout=20, what="the worker logs it")
        with server.client() as http:
            assert served_tag(http) == "base"
            assert http.get("/v2/health/ready").json()["model_tag"] == "base"
    finally:
        pointer.write_bytes(good)


@pytest.mark.e2e
def test_repaired_pointer_is_followed_again(pointer_server: tuple[Server, Path, Path]) -> None:
    """The worker must see the broken pointer (and say so), keep serving, then follow the
    repaired one: written back to back, the broken state might never be observed at all."""
    server, registry_dir, log = pointer_server
    pointer = registry_dir / "active.json"
    good = pointer.read_bytes()

    def complaints() -> int:
        return log.read_text(errors="replace").count("deployment spec unreadable")

    try:
        before = complaints()
        pointer.write_bytes(b"{half")
        wait_until(lambda: complaints() > before, timeout=20, what="the worker saw it broken")
        with server.client() as http:
            assert served_tag(http) == "base"  # kept serving while it was broken
            moved = json.loads(good) | {"tag": "boost", "previous_tag": "base"}
            pointer.write_bytes(json.dumps(moved).encode())
            wait_until(lambda: served_tag(http) == "boost", timeout=20, what="follows the pointer")
    finally:
        pointer.write_bytes(good)
        with server.client() as http:
            wait_until(lambda: served_tag(http) == "base", timeout=20, what="back to base")


# -- SIGKILL in the middle of a swap --------------------------------------------------------
def send_swap_and_forget(port: int, tag: str) -> socket.socket:
    """Send a swap request without waiting for its answer; the caller closes the socket."""
    body = orjson.dumps({"tag": tag})
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        b"POST /replace_ml_model HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\n"
        + f"Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return sock


def timed_swap(http: httpx.Client, tag: str) -> float:
    started = time.monotonic()
    response = http.post("/replace_ml_model", json={"tag": tag}, headers=auth_headers())
    assert response.status_code == 200, response.text
    return time.monotonic() - started


@pytest.mark.e2e
@pytest.mark.slow
def test_sigkill_during_swaps_leaves_one_consistent_active_model(registry_dir: Path) -> None:
    """Kill the server at several points of a swap (before, while loading, around the
    registry writes, after): the deployment record and its ``active.json`` mirror always
    parse, and a restart serves exactly the record's primary. The mirror is written second, so
    a kill between the two writes can leave it one swap behind the record."""
    registry = ModelRegistry(str(registry_dir))
    server = Server(str(registry_dir)).start()
    outcomes: list[tuple[float, str, str]] = []
    try:
        with server.client() as http:
            # Measure a swap in each direction; the kill delays span that duration.
            duration = max(timed_swap(http, "boost"), timed_swap(http, "base"))
        for fraction in (0.2, 0.6, 1.0):
            current = registry.read_deployment()
            assert current is not None
            target = "boost" if current.spec.primary == "base" else "base"
            sock = send_swap_and_forget(server.port, target)
            time.sleep(fraction * duration)  # the fault lands at a chosen time, not on an event
            assert server.stop(signal.SIGKILL) == -signal.SIGKILL
            sock.close()

            record = registry.read_deployment()  # raises if it does not parse
            pointer = registry.read_active()  # the mirror: raises if it does not parse
            assert record is not None
            assert pointer is not None
            primary = record.spec.primary
            assert primary in {current.spec.primary, target}
            assert pointer.tag in {current.spec.primary, target}
            outcomes.append((fraction, target, primary))

            server = Server(str(registry_dir)).start()
            with server.client() as http:
                ready = http.get("/v2/health/ready").json()
                assert (ready["status"], ready["model_tag"]) == ("ready", primary), outcomes
                assert served_tag(http) == primary
            assert ModelRegistry(str(registry_dir)).list_tags() == ["base", "boost"]
    finally:
        server.stop()
    print("kill fraction of a swap, target, primary after restart:", outcomes)
