"""The OIP infer endpoint of the deployment's model is served as a plain ASGI app (the hot
path), a pinned version through the router: both give the same answers, headers and errors,
in the protocol's shape."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from dependency_injector import providers
from prometheus_client import REGISTRY
from starlette.types import Message

from app.container import Container
from app.main import create_app
from app.settings import Settings
from tests.conftest import app_client
from tests.e2e.oip import INFER, pandas_request
from tests.fakes import FailingRuntime, RuntimeSwappingLoader
from tests.models import features, sample_rows

PINNED = "/v2/models/ml-api/versions/base/infer"
BODY = pandas_request(sample_rows(4), features())


def _invalid(reason: str) -> float:
    value = REGISTRY.get_sample_value("ml_api_invalid_requests_total", {"reason": reason})
    return value or 0.0


async def test_the_direct_and_the_pinned_path_answer_alike(settings: Settings) -> None:
    async with app_client(settings) as http:
        headers = {"X-Request-ID": "trace-1", "X-ML-API-Key": "user-1"}
        direct = await http.post(INFER, json=BODY, headers=headers)
        pinned = await http.post(PINNED, json=BODY, headers=headers)
    for answer in (direct, pinned):
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["x-request-id"] == "trace-1"
        assert int(answer.headers["content-length"]) == len(answer.content)
    assert direct.json() == pinned.json()
    assert direct.json()["id"] == "trace-1"
    assert direct.json()["model_version"] == "base"


@pytest.mark.parametrize(
    ("header", "value", "reason", "needle"),
    [
        ("X-Request-ID", "no spaces allowed", "invalid_request_id", "header X-Request-ID"),
        ("X-ML-API-Key", "k" * 257, "invalid_key", "header X-ML-API-Key must be 1-256"),
    ],
)
async def test_a_bad_header_is_400_naming_it_on_both_paths(
    settings: Settings, header: str, value: str, reason: str, needle: str
) -> None:
    before = _invalid(reason)
    async with app_client(settings) as http:
        for path in (INFER, PINNED):
            answer = await http.post(path, json=BODY, headers={header: value})
            assert answer.status_code == 400, answer.text
            assert list(answer.json()) == ["error"]
            assert needle in answer.json()["error"]
    assert _invalid(reason) == before + 2


async def test_a_model_that_fails_is_a_logged_500_in_the_oip_shape_on_both_paths(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    container = Container(settings=settings)
    container.model_loader.override(
        providers.Object(RuntimeSwappingLoader({"base": lambda r: FailingRuntime()}))
    )
    async with app_client(settings, container=container) as http:
        with caplog.at_level(logging.ERROR, logger="app.api.v2"):
            answers = [await http.post(path, json=BODY) for path in (INFER, PINNED)]
    for answer in answers:
        assert answer.status_code == 500
        assert answer.json() == {"error": "internal server error"}
    logged = [r for r in caplog.records if r.name == "app.api.v2"]
    assert [r.getMessage() for r in logged] == [
        f"unhandled error on POST {INFER}",
        f"unhandled error on POST {PINNED}",
    ]
    assert all(r.exc_info and "by the test" in str(r.exc_info[1]) for r in logged)


async def test_a_client_that_leaves_mid_body_gets_no_answer_and_the_server_goes_on(
    settings: Settings,
) -> None:
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        messages: list[Message] = [
            {"type": "http.request", "body": orjson.dumps(BODY)[:10], "more_body": True},
            {"type": "http.disconnect"},
        ]
        sent: list[Message] = []

        async def receive() -> Message:
            return messages.pop(0)

        async def send(message: Message) -> None:
            sent.append(message)

        scope: dict[str, Any] = {
            "type": "http",
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": INFER,
            "raw_path": INFER.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"content-type", b"application/json")],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        await manager.app(scope, receive, send)
        assert sent == []
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            assert (await http.post(INFER, json=BODY)).status_code == 200
