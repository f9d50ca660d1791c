"""The ``ml-api stream`` process: the container, the worker lifecycle, signals and /metrics.

The consumer runs as an extra loop of the same :class:`WorkerLifecycle` as an HTTP worker
(thread caps, the first sync with the registry, following hot swaps and the deployment spec,
drift, shadows, canary guard). SIGTERM or SIGINT asks it to stop: it drains, commits and the
process exits 0; a delivery failure exits 1 (its messages are answered again after restart).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from prometheus_client import start_http_server

from app.container import Container
from app.metrics import exposition_registry
from app.settings import Settings

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def run(settings: Settings) -> int:
    """Run a stream consumer until a stop signal; the process exit code."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s %(message)s"
    )
    container = Container(settings=settings)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(serve_stream(container))


async def serve_stream(container: Container, *, handle_signals: bool = True) -> int:
    """Start the lifecycle with the consumer as its extra loop; return once it finished."""
    settings: Settings = container.settings()
    lifecycle = container.lifecycle()
    consumer = container.stream_consumer()
    loop = asyncio.get_running_loop()
    signals = STOP_SIGNALS if handle_signals else ()
    for sig in signals:
        loop.add_signal_handler(sig, consumer.request_stop)
    stop_metrics = _serve_metrics(settings.host, settings.stream_metrics_port)
    try:
        await lifecycle.start(consumer.run())
        await consumer.finished.wait()
    finally:
        await lifecycle.stop()
        for sig in signals:
            loop.remove_signal_handler(sig)
        stop_metrics()
    if consumer.failure is not None:
        logger.error("stream consumer failed: %r", consumer.failure)
        return 1
    logger.info("stream consumer stopped")
    return 0


def _serve_metrics(host: str, port: int) -> Callable[[], None]:
    """Prometheus' /metrics on its own port (0: none); returns how to stop it."""
    if port == 0:
        return lambda: None
    server, thread = start_http_server(port, addr=host, registry=exposition_registry())
    logger.info("metrics on http://%s:%d/metrics", host, port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - installed with uvicorn[standard]
        return None
    return uvloop.new_event_loop
