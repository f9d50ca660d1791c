"""The ``ml-api`` command line."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer

cli = typer.Typer(help="ml-api: real-time inference with hot model swap.", no_args_is_help=True)


def _prepare_metrics_dir() -> None:
    """Multiprocess metrics need one fresh folder shared by this server's workers, set before
    any worker imports prometheus_client."""
    configured = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if configured:
        path = Path(configured)
        if path.exists():
            for child in path.glob("*.db"):
                child.unlink()
        path.mkdir(parents=True, exist_ok=True)
        return
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ml-api-metrics-")


@cli.callback()
def main() -> None:
    """ml-api: real-time inference with hot model swap, and its training pipeline."""


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind [ML_API_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind [ML_API_PORT].")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes [ML_API_WORKERS].")] = None,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
) -> None:
    """Serve the API with uvicorn."""
    import uvicorn

    from app.settings import Settings

    settings = Settings()  # fail fast on bad settings, before any worker starts
    _prepare_metrics_dir()
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host or settings.host,
        port=port if port is not None else settings.port,
        workers=workers or settings.workers,
        log_level=settings.log_level,
        access_log=access_log,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
    )
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if metrics_dir.startswith(tempfile.gettempdir()) and "ml-api-metrics-" in metrics_dir:
        shutil.rmtree(metrics_dir, ignore_errors=True)


@cli.command()
def stream(
    host: Annotated[
        str | None, typer.Option(help="Interface of the /metrics server [ML_API_HOST].")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Port of the /metrics server, 0 for none [ML_API_STREAM_METRICS_PORT]."),
    ] = None,
) -> None:
    """Answer prediction requests from Kafka: input topic -> output topic (at least once)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # the image sets one: it must exist
        _prepare_metrics_dir()
    from app.settings import Settings
    from app.streaming.runner import run

    overrides: dict[str, object] = {}
    if host is not None:
        overrides["host"] = host
    if metrics_port is not None:
        overrides["stream_metrics_port"] = metrics_port
    raise typer.Exit(run(Settings(**overrides)))  # type: ignore[arg-type]


@cli.command()
def report(
    output: Annotated[Path, typer.Option(help="Markdown file to write.")] = Path("report.md"),
    baseline: Annotated[str, typer.Option(help="Git revision to compare metrics with.")] = "main",
) -> None:
    """Write the merge-request report: metrics against the baseline revision, and plots."""
    from ml.errors import ReportError
    from ml.report import write_report

    try:
        write_report(output, baseline_rev=baseline)
    except ReportError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"report written to {output}")


if __name__ == "__main__":
    cli()
