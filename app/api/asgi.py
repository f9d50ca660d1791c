"""Plain ASGI for an endpoint served with no Starlette ``Request`` or ``Response``.

The OIP infer path of the deployment's model is the one such endpoint (see
:meth:`app.api.v2.OipEndpoints.infer_direct`). At one client the worker never waits for a
request, so every microsecond it spends per request is throughput; these helpers do only what
that endpoint needs: read the body, read the headers it takes, send one JSON answer.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

JSON_CONTENT_TYPE = (b"content-type", b"application/json")
RawHeaders = Sequence[tuple[bytes, bytes]]


async def read_body(receive: Receive) -> bytes:
    """The whole request body; :class:`ClientDisconnect` when the client left first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def headers_of(scope: Scope, *names: bytes) -> list[str | None]:
    """The first value of each lower-case header name, None for one not sent (one pass)."""
    found: list[str | None] = [None] * len(names)
    for name, value in scope["headers"]:
        if name in names:
            index = names.index(name)
            if found[index] is None:
                found[index] = value.decode("latin-1")
    return found


async def send_json(send: Send, body: bytes, status: int = 200, headers: RawHeaders = ()) -> None:
    """Answer with a JSON body already serialised."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                JSON_CONTENT_TYPE,
                (b"content-length", b"%d" % len(body)),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
