"""A stand-in for the service's ``GET``/``PUT /deployment``: a real HTTP server on 127.0.0.1
that holds one spec, checks the bearer token and records every request. It answers as the
service does: the record (revision, history, figures) with the spec under ``spec``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.local_server import ThreadedHTTPServer


@dataclass
class Recorded:
    method: str
    path: str
    authorization: str | None
    body: Any


@dataclass
class DeploymentState:
    spec: dict[str, Any]
    token: str
    requests: list[Recorded] = field(default_factory=list)
    revision: int = 1
    # Answer PUT with this (status, body) instead of storing the spec.
    refuse_put: tuple[int, dict[str, Any]] | None = None
    # Stored in place of the spec after a PUT: someone else changed it at the same moment.
    replaced_after_put: dict[str, Any] | None = None

    @property
    def puts(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "PUT"]


class DeploymentServer(ThreadedHTTPServer):
    """``with DeploymentServer(spec, token) as server:``; ``server.url``, ``server.state``."""

    def __init__(self, spec: dict[str, Any], token: str) -> None:
        self.state = DeploymentState(spec=spec, token=token)
        super().__init__(_handler(self.state))


def _handler(state: DeploymentState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._serve("GET")

        def do_PUT(self) -> None:
            self._serve("PUT")

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            authorization = self.headers.get("Authorization")
            state.requests.append(Recorded(method, self.path, authorization, body))
            if self.path != "/deployment":
                return self._answer(404, {"error": {"code": "not_found", "message": self.path}})
            if authorization != f"Bearer {state.token}":
                return self._answer(401, {"error": {"code": "unauthorized", "message": "token"}})
            if method == "PUT":
                if state.refuse_put is not None:
                    return self._answer(*state.refuse_put)
                stored = body if isinstance(body, dict) else {}
                state.spec = state.replaced_after_put or stored
                state.revision += 1
            record = {"revision": state.revision, "spec": state.spec, "history": [], "figures": {}}
            return self._answer(200, record)

        def _answer(self, status: int, document: dict[str, Any]) -> None:
            data = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test asserts on the recorded requests instead."""

    return Handler
