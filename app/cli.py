"""The ``ml-api`` command line."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

if TYPE_CHECKING:
    from app.settings import Settings

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


def _settings() -> Settings:
    """The service settings from the environment, or exit naming the first bad one."""
    from pydantic import ValidationError

    from app.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        error = exc.errors()[0]
        typer.echo(f"error: setting {error['loc'][0]}: {error['msg']}", err=True)
        raise typer.Exit(2) from exc


def _fail(exc: Exception) -> typer.Exit:
    message = getattr(exc, "message", str(exc))
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


FormatOption = Literal["csv", "parquet", "jsonl"]


@cli.command()
def score(
    input: Annotated[str, typer.Argument(help="File to score: a path or URL (s3://...).")],
    output: Annotated[str, typer.Argument(help="File to write: a path or URL.")],
    tag: Annotated[
        str | None, typer.Option(help="Experiment to score with [the deployment's primary].")
    ] = None,
    format: Annotated[
        FormatOption | None, typer.Option(help="Input format [from the extension].")
    ] = None,
    output_format: Annotated[
        FormatOption | None, typer.Option(help="Output format [from the extension].")
    ] = None,
    chunk_rows: Annotated[int, typer.Option(help="Rows per chunk.")] = 50_000,
    keep: Annotated[
        str | None, typer.Option(help="Input columns copied to the output, e.g. id,date.")
    ] = None,
    fail_fast: Annotated[bool, typer.Option(help="Stop at the first invalid row.")] = False,
    workers: Annotated[int, typer.Option(help="Scoring processes.")] = 1,
    shard: Annotated[
        str | None, typer.Option(help="Score only shard i of N (chunk index mod N == i).")
    ] = None,
    progress: Annotated[
        bool | None,
        typer.Option("--progress/--no-progress", help="Progress bar [on a terminal]."),
    ] = None,
) -> None:
    """Score a whole file (CSV, Parquet or JSON Lines) in chunks; resumable."""
    from app.batch import ScoreOptions, Shard, parse_keep, score_file
    from app.errors import ServiceError

    settings = _settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        options = ScoreOptions(
            input_url=input,
            output_url=output,
            tag=tag,
            input_format=format,
            output_format=output_format,
            chunk_rows=chunk_rows,
            keep=parse_keep(keep),
            fail_fast=fail_fast,
            workers=workers,
            shard=Shard.parse(shard) if shard is not None else None,
            progress=progress,
        )
        summary = score_file(options, settings)
    except (ServiceError, OSError) as exc:  # OSError: storage refused a read or a write
        raise _fail(exc) from exc
    typer.echo(
        f"{summary['rows']:,} rows: {summary['rows_scored']:,} scored, "
        f"{summary['rows_failed']:,} failed; output {summary['output']}"
    )


@cli.command()
def export(
    outdir: Annotated[str, typer.Argument(help="Folder to write the bundle into.")],
    tag: Annotated[str, typer.Option(help="Experiment to export.")],
) -> None:
    """Export an experiment's verified ONNX model as a self-contained edge bundle."""
    from app.edge import export_bundle
    from app.errors import ServiceError

    settings = _settings()
    try:
        bundle = export_bundle(settings, outdir, tag)
    except ServiceError as exc:
        raise _fail(exc) from exc
    typer.echo(f"bundle of {bundle.tag} written to {outdir}: {', '.join(bundle.files)}")


if __name__ == "__main__":
    cli()
