"""Add a published experiment to the live deployment as a shadow, never as the primary.

The last step of the retraining pipeline (``.gitlab-ci.yml``, job ``retrain-shadow``). The
service keeps a deployment spec behind ``GET``/``PUT /deployment`` (admin bearer token): a
primary, candidates that share the traffic, and shadows that score a copy of it and answer no
one. This command reads the spec, adds ``{"tag": TAG, "percent": PERCENT}`` to the shadows
(replacing an older entry for the same tag), keeps everything else exactly as read (primary,
candidates, the guard's, bandit's and analysis' settings), writes the spec back, and reads it
again to check. Promoting the shadow to a candidate or
the primary stays a person's decision.

    ML_API_ADMIN_TOKEN=... python -m ml.shadow_deploy --url "$ML_API_URL" --tag 1a2b3c4-r12

The token is read from ``ML_API_ADMIN_TOKEN`` only (never from the command line, which CI logs
and ``ps`` show). A refusal by the service, or a tag that is already the primary or a
candidate, exits 1 with one line on stderr. Read and write are two requests: a change made by
someone else in between is overwritten, so the check afterwards reports it if the primary or
the candidates changed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from app.registry import validate_tag
from ml.errors import PipelineError, run_stage

TOKEN_ENV = "ML_API_ADMIN_TOKEN"  # noqa: S105 (the variable name, not a token)
DEPLOYMENT_PATH = "/deployment"
TIMEOUT_SECONDS = 30.0
# How much of a refusal's body to quote: enough for the service's error message.
QUOTED_BODY = 300


class ShadowError(PipelineError):
    """The shadow could not be added; the message says what the service or the spec said."""


def with_shadow(spec: Mapping[str, Any], tag: str, percent: int) -> dict[str, Any]:
    """The PUT body: ``spec`` as it is, its shadows with ``tag`` at ``percent`` (an older
    entry for ``tag`` is replaced)."""
    primary, candidates, shadows = _parts(spec)
    if tag == primary:
        raise ShadowError(f"experiment {tag!r} is the primary already; nothing to shadow")
    if tag in _tags(candidates):
        raise ShadowError(
            f"experiment {tag!r} is a candidate (it serves users already); remove it from the "
            "candidates first to shadow it"
        )
    others = [shadow for shadow in shadows if _tag_of(shadow) != tag]
    return {**spec, "shadows": [*others, {"tag": tag, "percent": percent}]}


def deploy_shadow(client: httpx.Client, tag: str, percent: int) -> dict[str, Any]:
    """Add ``tag`` as a shadow on the service ``client`` talks to; return the spec it holds
    afterwards. Raises ShadowError."""
    before = _spec_of(_request(client, "GET", None))
    body = with_shadow(before, tag, percent)
    if body["shadows"] != list(_parts(before)[2]):
        _request(client, "PUT", body)
    after = _spec_of(_request(client, "GET", None))
    primary, candidates, shadows = _parts(after)
    if primary != body["primary"] or _tags(candidates) != _tags(body["candidates"]):
        raise ShadowError(
            f"the deployment changed while the shadow was added: primary {primary!r}, "
            f"candidates {_tags(candidates)} (expected {body['primary']!r}, "
            f"{_tags(body['candidates'])}); check it and run again"
        )
    if not any(_tag_of(s) == tag and s.get("percent") == percent for s in shadows):
        raise ShadowError(f"the service accepted the spec but does not list {tag!r} as a shadow")
    return after


def _spec_of(document: Mapping[str, Any]) -> dict[str, Any]:
    """The spec inside ``GET /deployment``'s answer (the record: revision, history, figures and
    the spec under ``spec``)."""
    spec = document.get("spec")
    if not isinstance(spec, dict):
        raise ShadowError(f"GET {DEPLOYMENT_PATH} answered without a spec: {dict(document)!r}")
    return spec


def _parts(spec: Mapping[str, Any]) -> tuple[str, Sequence[Any], Sequence[Mapping[str, Any]]]:
    primary = spec.get("primary")
    candidates = spec.get("candidates", [])
    shadows = spec.get("shadows", [])
    if not isinstance(primary, str) or not primary:
        raise ShadowError(f"the deployment spec has no primary: {dict(spec)!r}")
    if not isinstance(candidates, list) or not isinstance(shadows, list):
        raise ShadowError("the deployment spec's candidates and shadows must be lists")
    if not all(isinstance(shadow, dict) for shadow in shadows):
        raise ShadowError("the deployment spec's shadows must be objects with a tag")
    return primary, candidates, shadows


def _tag_of(entry: Any) -> Any:
    return entry.get("tag") if isinstance(entry, Mapping) else entry


def _tags(entries: Sequence[Any]) -> list[Any]:
    return [_tag_of(entry) for entry in entries]


def _request(client: httpx.Client, method: str, body: dict[str, Any] | None) -> dict[str, Any]:
    where = f"{method} {str(client.base_url).rstrip('/')}{DEPLOYMENT_PATH}"
    try:
        response = client.request(method, DEPLOYMENT_PATH, json=body)
    except httpx.HTTPError as exc:
        raise ShadowError(f"{where}: {type(exc).__name__}: {exc}") from None
    if response.status_code >= 400:
        text = " ".join(response.text.split())[:QUOTED_BODY]
        raise ShadowError(f"{where} answered {response.status_code}: {text}")
    try:
        document = response.json()
    except ValueError:
        raise ShadowError(f"{where} answered {response.status_code} without JSON") from None
    if not isinstance(document, dict):
        raise ShadowError(f"{where}: expected a JSON object, got {type(document).__name__}")
    return document


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ml.shadow_deploy",
        description=f"Add an experiment to the live deployment as a shadow ({TOKEN_ENV} holds "
        "the admin token).",
    )
    parser.add_argument("--url", required=True, help="base URL of the service")
    parser.add_argument("--tag", required=True, help="the published experiment to shadow")
    parser.add_argument(
        "--percent", type=int, default=100, help="share of requests it shadows (default 100)"
    )
    return parser.parse_args(argv)


def _run(argv: Sequence[str] | None) -> None:
    args = _arguments(argv)
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ShadowError(f"{TOKEN_ENV} is not set: the service needs its admin token")
    tag = validate_tag(args.tag)
    if not 1 <= args.percent <= 100:
        raise ShadowError(f"--percent must be between 1 and 100 (got {args.percent})")
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=args.url, headers=headers, timeout=TIMEOUT_SECONDS) as client:
        spec = deploy_shadow(client, tag, args.percent)
    shadows = ", ".join(f"{_tag_of(s)} ({s.get('percent')}%)" for s in spec["shadows"])
    print(
        f"shadow-deploy: {tag} shadows {args.percent}% of the traffic; primary "
        f"{spec['primary']} unchanged; shadows now {shadows}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    run_stage("shadow-deploy", lambda: _run(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
