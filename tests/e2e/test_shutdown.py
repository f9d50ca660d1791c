"""SIGTERM under load: in-flight requests complete, no new connection is accepted, and the
process exits within ML_API_SHUTDOWN_GRACE_SECONDS even when a client never finishes."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest

from tests.e2e.server import Server
from tests.models import sample_rows

pytestmark = pytest.mark.e2e

GRACE_SECONDS = 4
CLIENTS = 8
ROWS = sample_rows(3)


@dataclass
class LoadResults:
    statuses: list[int] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, type)


@dataclass
class Outcome:
    reply: bytes  # raw answer to the request that was in flight at SIGTERM
    results: LoadResults
    served_before_signal: int
    signalled_at: float
    refused_after: float  # seconds from SIGTERM until new connections were refused
    exited_after: float
    exit_code: int


async def _load_client(url: str, results: LoadResults) -> None:
    """Predict in a loop until the server stops talking to us."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        while True:
            try:
                response = await http.post("/predict", json={"instances": ROWS})
            except httpx.TransportError as exc:
                results.errors.append((time.monotonic(), type(exc).__name__))
                return
            results.statuses.append(response.status_code)


async def _open_unfinished_request(
    port: int,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """A /predict whose headers and half its body are sent; returns the missing half."""
    body = orjson.dumps({"instances": ROWS})
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body[: len(body) // 2]
    )
    await writer.drain()
    return reader, writer, body[len(body) // 2 :]


async def _in_progress(http: httpx.AsyncClient) -> float:
    text = (await http.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith("ml_api_http_requests_in_progress{") and 'handler="/predict"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


async def _scenario(server: Server) -> Outcome:
    assert server.process is not None
    results = LoadResults()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as probe:
        # Two requests the server has started but cannot finish until we send the rest.
        finishing = await _open_unfinished_request(server.port)
        stuck = await _open_unfinished_request(server.port)
        deadline = time.monotonic() + 20
        while await _in_progress(probe) < 2:
            assert time.monotonic() < deadline, "the unfinished requests never started"
            await asyncio.sleep(0.05)

    load = [asyncio.create_task(_load_client(server.url, results)) for _ in range(CLIENTS)]
    deadline = time.monotonic() + 30
    while len(results.statuses) < 100:  # real load before the signal
        assert time.monotonic() < deadline, f"only {len(results.statuses)} responses"
        assert not any(task.done() for task in load), results.errors
        await asyncio.sleep(0.05)

    signalled_at = time.monotonic()
    served_before_signal = len(results.statuses)
    server.process.send_signal(signal.SIGTERM)

    deadline = time.monotonic() + 10
    while await asyncio.to_thread(_accepts_connections, server.port):
        assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
        await asyncio.sleep(0.05)
    refused_after = time.monotonic() - signalled_at

    # The in-flight request completes: send the rest of its body and read the answer.
    reader, writer, rest = finishing
    writer.write(rest)
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), timeout=10)  # the server closes after it
    writer.close()

    await asyncio.wait_for(asyncio.gather(*load), timeout=30)
    exit_code = await asyncio.to_thread(server.process.wait, GRACE_SECONDS + 30)
    exited_after = time.monotonic() - signalled_at
    stuck[1].close()
    return Outcome(
        reply=reply,
        results=results,
        served_before_signal=served_before_signal,
        signalled_at=signalled_at,
        refused_after=refused_after,
        exited_after=exited_after,
        exit_code=exit_code,
    )


def test_sigterm_under_load_completes_in_flight_and_exits_within_grace(
    registry_dir: Path,
) -> None:
    server = Server(
        str(registry_dir), env={"ML_API_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS)}
    ).start()
    try:
        outcome = asyncio.run(asyncio.wait_for(_scenario(server), timeout=120))
    finally:
        server.stop(signal.SIGKILL)
    print(
        f"served {len(outcome.results.statuses)} ({outcome.served_before_signal} before SIGTERM), "
        f"refusing after {outcome.refused_after:.2f} s, exit {outcome.exit_code} "
        f"after {outcome.exited_after:.2f} s"
    )
    head, _, body = outcome.reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), outcome.reply[:300]
    assert b"connection: close" in head.lower()
    assert len(orjson.loads(body)["predictions"]) == len(ROWS)

    # Every answer the load clients got was a success; each stopped on a connection error,
    # and only once the server was shutting down.
    results = outcome.results
    assert set(results.statuses) == {200}
    assert len(results.statuses) >= outcome.served_before_signal
    assert len(results.errors) == CLIENTS
    assert all(at >= outcome.signalled_at for at, _ in results.errors)

    # uvicorn re-raises SIGTERM after its graceful shutdown, hence -15; the stuck client is
    # cut off when the grace period ends, and not before.
    assert outcome.exit_code == -signal.SIGTERM
    assert outcome.refused_after < 2
    assert GRACE_SECONDS - 0.5 <= outcome.exited_after <= GRACE_SECONDS + 3
