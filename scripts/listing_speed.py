"""How fast ``GET /get_experiment_metas`` is on a registry of many experiments in S3.

Starts a local S3-compatible server (moto), publishes ``--experiments`` experiments into a
bucket (two real ones, the rest copies of their metadata under other tags: listing reads
metadata only), starts ``ml-api serve`` on it, and times calls of the listing: the first one
(every meta.json read), the next ones (metadata cached; the folder listing reused for 2 s),
and one after the folder listing expired (one LIST request, no metadata read).

    .venv/bin/python scripts/listing_speed.py --experiments 1000
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated

import boto3
import httpx
import typer

from app.registry.store import LISTING_TTL_SECONDS, ModelRegistry
from tests.local_server import free_port, wait_for_port, wait_until_ok
from tests.models import publish

ROOT = Path(__file__).resolve().parent.parent


def timed_get(http: httpx.Client, params: dict[str, int]) -> float:
    started = time.perf_counter()
    response = http.get("/get_experiment_metas", params=params)
    response.raise_for_status()
    return (time.perf_counter() - started) * 1000


def main(experiments: Annotated[int, typer.Option(min=2, max=20_000)] = 1000) -> None:
    port = free_port()
    moto = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    server = None
    try:
        wait_for_port(port, moto)
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="listing")
        with tempfile.TemporaryDirectory() as tmp:
            local = ModelRegistry(str(Path(tmp) / "seed"))
            publish(local, "base", "logreg", activate=True)
            publish(local, "boost", "hgb")
            template = json.loads((Path(tmp) / "seed/experiments/boost/meta.json").read_text())
            for path in (Path(tmp) / "seed").rglob("*"):
                if path.is_file():
                    key = f"models/{path.relative_to(Path(tmp) / 'seed').as_posix()}"
                    s3.upload_file(str(path), "listing", key)

            def upload(i: int) -> None:
                meta = template | {"tag": f"exp-{i:05d}"}
                s3.put_object(
                    Bucket="listing",
                    Key=f"models/experiments/exp-{i:05d}/meta.json",
                    Body=json.dumps(meta).encode(),
                )

            with ThreadPoolExecutor(8) as pool:
                list(pool.map(upload, range(experiments - 2)))
        http_port = free_port()
        env |= {
            "ML_API_REGISTRY_URL": "s3://listing/models",
            "ML_API_ADMIN_TOKEN": secrets.token_hex(24),
            "ML_API_LOG_LEVEL": "warning",
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(http_port)],
            cwd=ROOT,
            env=env,
        )
        url = f"http://127.0.0.1:{http_port}"
        wait_until_ok(f"{url}/v2/health/ready", server, timeout=120)
        with httpx.Client(base_url=url, timeout=300) as http:
            everything = {"limit": 1000}
            first = timed_get(http, everything)
            warm = [timed_get(http, everything) for _ in range(20)]
            page = [timed_get(http, {"limit": 20}) for _ in range(20)]
            time.sleep(LISTING_TTL_SECONDS + 0.5)  # let the folder listing expire
            relisted = timed_get(http, everything)
            total = http.get("/get_experiment_metas", params={"limit": 1}).headers["x-total-count"]
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        moto.terminate()
        moto.wait(timeout=30)
    print(f"experiments in the bucket: {total}")
    print(f"first call (every meta.json read): {first:.0f} ms")
    print(
        f"next calls, 1,000 per page: median {statistics.median(warm):.1f} ms, "
        f"max {max(warm):.1f} ms"
    )
    print(f"next calls, 20 per page: median {statistics.median(page):.1f} ms")
    print(f"after the folder listing expired (one LIST, metadata cached): {relisted:.0f} ms")


if __name__ == "__main__":
    typer.run(main)
