"""The OIP path against /predict, in-process (no HTTP, no network): microseconds per request on
the same rows, and optionally a pyinstrument profile of one path and request size.

    .venv/bin/python bench/oip_profile.py --requests 3000
    .venv/bin/python bench/oip_profile.py --requests 3000 --profile   # + where the time goes
    .venv/bin/python bench/oip_profile.py --model heavy --profile --profile-path /predict \
        --profile-rows 100                                            # 100 named rows, HGB
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import bench_model  # noqa: E402
from inprocess import microseconds, request_times  # noqa: E402

from app.main import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402

INFER = "/v2/models/ml-api/infer"


def bodies(x: Any, rows: int) -> dict[str, bytes]:
    """The same rows as /predict takes them and as one OIP 2-D tensor."""
    return {
        "/predict": orjson.dumps({"instances": [bench_model.row(x, i) for i in range(rows)]}),
        INFER: bench_model.oip_body(x, rows),
    }


def main(
    requests: Annotated[int, typer.Option(min=100, max=100_000)] = 3000,
    profile: Annotated[bool, typer.Option(help="Print a profile of one path.")] = False,
    model: Annotated[str, typer.Option(help="light or heavy (bench_model.py)")] = "light",
    profile_path: Annotated[str, typer.Option(help=f"{INFER} or /predict")] = INFER,
    profile_rows: Annotated[int, typer.Option(help="rows per profiled request: 1 or 100")] = 1,
) -> None:
    if profile_path not in (INFER, "/predict") or profile_rows not in (1, 100):
        raise typer.BadParameter(f"--profile-path {INFER} or /predict, --profile-rows 1 or 100")
    with tempfile.TemporaryDirectory() as tmp:
        x = bench_model.build(Path(tmp) / "registry", kind=model)
        settings = Settings(registry_url=str(Path(tmp) / "registry"), log_level="warning")
        print(f"in-process, microseconds per request (no HTTP), {model} model")
        print("| path | rows | mean | p50 | p99 |")
        print("|---|---|---|---|---|")
        for rows in (1, 100):
            for path, body in bodies(x, rows).items():
                app = create_app(settings)
                mean, p50, p99 = microseconds(
                    asyncio.run(request_times(app, path, body, requests)).latencies
                )
                print(f"| {path} | {rows} | {mean:.0f} | {p50:.0f} | {p99:.0f} |", flush=True)
        if profile:
            body = bodies(x, profile_rows)[profile_path]
            app = create_app(settings)
            asyncio.run(request_times(app, profile_path, body, requests, profile=True))


if __name__ == "__main__":
    typer.run(main)
