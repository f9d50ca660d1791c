"""Request metrics label routes by path or template; docs and health are not traffic."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.types import Receive, Scope, Send

from app.api.middleware import RequestMetricsMiddleware
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
