"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs too much per request)."""

from __future__ import annotations

import time
from collections.abc import Iterable

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PayloadTooLarge
from app.metrics import ServiceMetrics


class RequestMetricsMiddleware:
    """Counts and times requests by route; health and metrics are not traffic.

    Paths that match no route share the label ``unmatched`` so scanners cannot blow up the
    number of series.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: ServiceMetrics,
        counted_paths: Iterable[str],
        excluded_paths: Iterable[str],
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.counted = frozenset(counted_paths)
        self.excluded = frozenset(excluded_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.excluded:
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        handler = scope["path"] if scope["path"] in self.counted else "unmatched"
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        self.metrics.request_started(handler, method)
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self.metrics.request_finished(handler, method, status, time.perf_counter() - started)


class BodySizeLimitMiddleware:
    """Refuses bodies over ``max_bytes``: at once when Content-Length says so, else while
    streaming, before the whole body is buffered."""

    def __init__(self, app: ASGIApp, max_bytes: int, metrics: ServiceMetrics) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in {"GET", "HEAD", "OPTIONS"}:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send, declared)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise PayloadTooLarge(self._message(), reason="too_large")
            return message

        await self.app(scope, limited_receive, send)

    def _message(self) -> str:
        return f"request body is larger than {self.max_bytes} bytes (ML_API_MAX_UPLOAD_BYTES)"

    async def _refuse(self, send: Send, declared: int) -> None:
        self.metrics.request_invalid("too_large")
        body = orjson.dumps({"error": {"code": "payload_too_large", "message": self._message()}})
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
