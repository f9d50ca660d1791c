"""A recording HTTP server on 127.0.0.1: stands in for GitLab (which cannot run here).

It answers ``POST /api/v4/projects/<id>/trigger/pipeline`` as GitLab's trigger API does (201
with the new pipeline) and records every request, so a test can assert exactly what the
service sent.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs

from tests.local_server import ThreadedHTTPServer


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, str]


class RecordingServer(ThreadedHTTPServer):
    def __init__(self, status: int = 201) -> None:
        self.status = status
        self.calls: list[Recorded] = []
        self.called = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length).decode()
                form = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
                owner.calls.append(Recorded("POST", self.path, dict(self.headers), form))
                owner.called.set()
                answer = {
                    "id": 1000 + len(owner.calls),
                    "iid": len(owner.calls),
                    "ref": form.get("ref"),
                    "web_url": f"http://gitlab.test/pipelines/{1000 + len(owner.calls)}",
                }
                payload = json.dumps(answer if owner.status < 300 else {"message": "refused"})
                self.send_response(owner.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload.encode())

            def log_message(self, format: str, *args: object) -> None:
                return None

        super().__init__(Handler)
