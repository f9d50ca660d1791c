"""Real ``ml-api serve`` processes for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import datetime
from http.client import HTTPConnection
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from tests.conftest import ADMIN_TOKEN, PROJECT_ROOT
from tests.local_server import free_port, stop_process, wait_until_ok


class Server:
    """One ``ml-api serve`` process (and its workers) on a random port of 127.0.0.1."""

    def __init__(
        self,
        registry_url: str,
        *,
        workers: int = 1,
        poll_seconds: float = 0.5,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self._log_path = log_path
        self._env = {
            **os.environ,
            "ML_API_REGISTRY_URL": registry_url,
            "ML_API_ADMIN_TOKEN": ADMIN_TOKEN,
            "ML_API_POLL_SECONDS": str(poll_seconds),
            "ML_API_LOG_LEVEL": "warning",
            **(env or {}),
        }
        self._env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, wait_ready: bool = True) -> Server:
        log = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", *self._serve_options()],
                cwd=PROJECT_ROOT,
                env=self._env,
                stdout=log,
                stderr=log,
            )
        finally:
            if not isinstance(log, int):
                log.close()  # the child has its own descriptor
        try:
            self.wait(ready=wait_ready)
        except BaseException:
            self.stop()  # a server that never became ready is not left running
            raise
        return self

    def _serve_options(self) -> list[str]:
        return ["--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers)]

    def wait(self, ready: bool = True, timeout: float = 60.0) -> None:
        assert self.process is not None
        path = "/v2/health/ready" if ready else "/v2/health/live"
        wait_until_ok(self.url + path, self.process, timeout)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> int:
        return 0 if self.process is None else stop_process(self.process, sig, timeout)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def auth_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def new_connection(
    url: str, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """One request on a connection of its own, so that every worker of a server gets some.

    The standard library's client: an ``httpx.Client`` per request builds a TLS context each
    time, CPU that the servers under test would be short of on a small machine.
    """
    parsed = urlsplit(url)
    connection = HTTPConnection(parsed.hostname or "", parsed.port, timeout=10)
    try:
        payload = None if body is None else orjson.dumps(body)
        sent = {"Content-Type": "application/json", **auth_headers(), **(headers or {})}
        connection.request(method, path, body=payload, headers=sent)
        response = connection.getresponse()
        return response.status, orjson.loads(response.read())
    finally:
        connection.close()


def revision_reached(
    url: str, revision: int, workers: int, timeout: float = 30.0
) -> list[datetime]:
    """When each worker behind ``url`` started serving spec ``revision``."""
    seen: set[datetime] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < workers:
        assert time.monotonic() < deadline, f"only {len(seen)} of {workers} workers at {revision}"
        _, body = new_connection(url, "GET", "/v2/health/ready")
        if body["revision"] == revision:
            seen.add(datetime.fromisoformat(body["serving_since"]))
    return sorted(seen)
