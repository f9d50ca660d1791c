"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs too much per request)."""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PayloadTooLarge
from app.metrics import ServiceMetrics


class RequestMetricsMiddleware:
    """Counts and times requests by route; health, metrics and docs are not traffic.

    A counted path is its own label; a path of a templated route (``/v2/models/{name}/infer``)
    is labelled by its template, so names and tags never become label values. Paths that
    match no route share the label ``unmatched`` so scanners cannot blow up the number of
    series.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: ServiceMetrics,
        counted_paths: Iterable[str],
        excluded_paths: Iterable[str],
        counted_templates: Iterable[str] = (),
        excluded_prefixes: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.counted = frozenset(counted_paths)
        self.excluded = frozenset(excluded_paths)
        self.excluded_prefixes = tuple(excluded_prefixes)
        patterns = [
            (re.compile("^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(t)) + "$"), t)
            for t in counted_templates
        ]

        @functools.lru_cache(maxsize=1024)
        def template_of(path: str) -> str:
            return next((t for pattern, t in patterns if pattern.match(path)), "unmatched")

        self._template_of = template_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if not path or path in self.excluded or path.startswith(self.excluded_prefixes):
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        handler = path if path in self.counted else self._template_of(path)
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
            await self._refuse(send, declared, oip=scope["path"].startswith("/v2/"))
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

    async def _refuse(self, send: Send, declared: int, oip: bool) -> None:
        self.metrics.request_invalid("too_large")
        # Open Inference Protocol routes answer errors in that protocol's shape.
        error: object = (
            self._message() if oip else {"code": "payload_too_large", "message": self._message()}
        )
        body = orjson.dumps({"error": error})
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


ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]


class DirectRoutesMiddleware:
    """Hands POSTs to the inference paths straight to their endpoints.

    The router and Starlette's exception and exit-stack layers cost about 18 µs of a
    140 µs single-row request (bench/oip_profile.py's setup, in-process); for these routes
    they do nothing the endpoint needs. Placed inside every other middleware, so metrics, the
    body limit and CORS see these requests as any other.

    ``routes`` pairs each Starlette route with the path parameters of the one path served
    directly (the OIP model name); other paths of the route, and other methods, take the usual
    way. An error its endpoint raises is answered by the app's handler for its type, as the
    exception layer would; one with no handler propagates to the server-error layer, as
    before. ``raw`` routes are served by a plain ASGI app instead of the route's endpoint
    (same triples, the app last); such an app answers its own errors.
    """

    def __init__(
        self,
        app: ASGIApp,
        routes: Iterable[tuple[Route, Mapping[str, str]]],
        handlers: Mapping[Any, Any],
        raw: Iterable[tuple[Route, Mapping[str, str], ASGIApp]] = (),
    ) -> None:
        self.app = app
        self._handlers = handlers  # the app's own mapping, read at each error
        self._apps: dict[tuple[str, str], ASGIApp] = {}
        for route, params in routes:
            self._add(route, params, functools.partial(self._serve, route.endpoint, dict(params)))
        for route, params, direct in raw:
            self._add(route, params, direct)

    def _add(self, route: Route, params: Mapping[str, str], direct: ASGIApp) -> None:
        path = str(route.url_path_for(route.name, **params))
        for method in route.methods or ():
            self._apps[method, path] = direct

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        direct = (
            self._apps.get((scope["method"], scope["path"])) if scope["type"] == "http" else None
        )
        await (self.app if direct is None else direct)(scope, receive, send)

    async def _serve(
        self,
        endpoint: Callable[[Request], Awaitable[Response]],
        params: dict[str, str],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        scope["path_params"] = dict(params)  # the request's own, as the router makes it
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> ErrorHandler | None:
        for kind in type(exc).__mro__:
            if kind is Exception:  # the server-error layer's: a 500 after the log
                return None
            handler = self._handlers.get(kind)
            if handler is not None:
                return handler  # type: ignore[no-any-return]
        return None
