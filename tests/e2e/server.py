"""Real ``ml-api serve`` processes for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import httpx

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
