"""Request metrics label routes by path or template; docs and health are not traffic. The
inference paths go straight to their endpoints, with the app's error handlers."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from app.api.middleware import DirectRoutesMiddleware, RequestMetricsMiddleware
from app.metrics import NullMetrics


class RecordingMetrics(NullMetrics):
    """Remembers the handler label of every finished request."""

    def __init__(self) -> None:
        super().__init__()
        self.handlers: list[str] = []

    def request_finished(self, handler: str, method: str, status: int, seconds: float) -> None:
        self.handlers.append(handler)


async def answer(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ("/predict", "/predict"),
        ("/v2/models/ml-api/infer", "/v2/models/{name}/infer"),
        ("/v2/models/ml-api/versions/a1b2c3d/infer", "/v2/models/{name}/versions/{version}/infer"),
        ("/v2/repository/models/a1b2c3d/load", "/v2/repository/models/{tag}/load"),
        ("/v2/models/ml-api/versions/a1b2c3d/infer/extra", "unmatched"),
        ("/wp-login.php", "unmatched"),
        ("/docs/assets/swagger-ui.css", None),
        ("/v2/health/ready", None),
    ],
)
async def test_label_is_the_path_or_its_template(path: str, label: str | None) -> None:
    metrics = RecordingMetrics()
    middleware = RequestMetricsMiddleware(
        answer,
        metrics=metrics,
        counted_paths=["/predict"],
        excluded_paths=["/v2/health/ready"],
        counted_templates=[
            "/v2/models/{name}/infer",
            "/v2/models/{name}/versions/{version}/infer",
            "/v2/repository/models/{tag}/load",
        ],
        excluded_prefixes=["/docs/"],
    )
    scope: dict[str, Any] = {"type": "http", "method": "POST", "path": path, "headers": []}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    await middleware(scope, receive, send)
    assert metrics.handlers == ([] if label is None else [label])


# -- direct routes ---------------------------------------------------------------------------
class Refused(ValueError):
    pass


class RefusedHarder(Refused):
    pass


async def _refused(request: Request, exc: Exception) -> Response:
    return JSONResponse({"handled": type(exc).__name__}, status_code=422)


async def _call(app: Any, method: str, path: str) -> tuple[int, bytes]:
    scope: dict[str, Any] = {"type": "http", "method": method, "path": path, "headers": []}
    sent: list[Message] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def _direct(fail_with: Exception | None = None) -> tuple[DirectRoutesMiddleware, list[str]]:
    """The middleware over an inner app that answers 299 "inner" and records its paths."""
    inner_paths: list[str] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        inner_paths.append(scope["path"])
        await PlainTextResponse("inner", status_code=299)(scope, receive, send)

    async def infer(request: Request) -> Response:
        if fail_with is not None:
            raise fail_with
        return PlainTextResponse(f"direct {request.path_params['name']}")

    route = Route("/v2/models/{name}/infer", infer, methods=["POST"], name="infer")
    middleware = DirectRoutesMiddleware(
        inner, routes=[(route, {"name": "ml-api"})], handlers={Refused: _refused}
    )
    return middleware, inner_paths


async def test_the_direct_path_is_served_by_its_endpoint_with_its_path_parameters() -> None:
    middleware, inner_paths = _direct()
    assert await _call(middleware, "POST", "/v2/models/ml-api/infer") == (200, b"direct ml-api")
    assert inner_paths == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/models/ml-api/infer"),  # another method of that path
        ("POST", "/v2/models/other/infer"),  # another path of that route: the router's 404
        ("POST", "/v2/models/ml-api/infer/"),
        ("POST", "/predict"),
    ],
)
async def test_everything_else_takes_the_usual_way(method: str, path: str) -> None:
    middleware, inner_paths = _direct()
    assert await _call(middleware, method, path) == (299, b"inner")
    assert inner_paths == [path]


async def test_an_error_is_answered_by_the_handler_for_its_type_or_a_base_type() -> None:
    for error in (Refused("no"), RefusedHarder("no")):
        middleware, _ = _direct(fail_with=error)
        status, body = await _call(middleware, "POST", "/v2/models/ml-api/infer")
        assert (status, body) == (422, b'{"handled":"%s"}' % type(error).__name__.encode())


async def test_an_error_without_a_handler_propagates_to_the_server_error_layer() -> None:
    middleware, _ = _direct(fail_with=KeyError("surprise"))
    with pytest.raises(KeyError, match="surprise"):
        await _call(middleware, "POST", "/v2/models/ml-api/infer")


async def test_a_raw_route_is_served_by_its_asgi_app_and_everything_else_as_before() -> None:
    inner_paths: list[str] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        inner_paths.append(scope["path"])
        await PlainTextResponse("inner", status_code=299)(scope, receive, send)

    async def raw(scope: Scope, receive: Receive, send: Send) -> None:
        await PlainTextResponse(f"raw {scope['path']}")(scope, receive, send)

    async def unused(request: Request) -> Response:
        raise AssertionError("the raw app serves this path, not the route's endpoint")

    route = Route("/v2/models/{name}/infer", unused, methods=["POST"], name="infer")
    middleware = DirectRoutesMiddleware(
        inner, routes=[], handlers={}, raw=[(route, {"name": "ml-api"}, raw)]
    )
    path = "/v2/models/ml-api/infer"
    assert await _call(middleware, "POST", path) == (200, f"raw {path}".encode())
    assert await _call(middleware, "POST", "/v2/models/other/infer") == (299, b"inner")
    assert await _call(middleware, "GET", path) == (299, b"inner")
    assert inner_paths == ["/v2/models/other/infer", path]
