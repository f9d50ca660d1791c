"""Errors a user fixes (bad data, bad params), and how stage commands report them."""

from __future__ import annotations

import sys
from collections.abc import Callable

from app.registry import ServiceError


class PipelineError(Exception):
    """A problem in the inputs of a stage: reported as one line on stderr, never a traceback."""


class ParamsError(PipelineError):
    """params.yaml is unreadable, misses a key, has an unknown key or a bad value."""


class DataError(PipelineError):
    """The dataset cannot be trained on: the message names the file, column, row or class."""


class ReportError(PipelineError):
    """The report could not be built (DVC failed, unknown baseline revision, bad plot)."""


def run_stage(name: str, body: Callable[[], None]) -> None:
    """Run a stage body; expected failures exit 1 with ``<stage>: <message>`` on stderr.

    Unexpected exceptions keep their traceback: they are bugs, and the traceback is the
    fastest way to fix them.
    """
    try:
        body()
    except PipelineError as exc:
        _fail(name, str(exc))
    except ServiceError as exc:  # registry and model-file checks shared with the service
        _fail(name, exc.message)


def _fail(name: str, message: str) -> None:
    print(f"{name}: error: {message}", file=sys.stderr)
    raise SystemExit(1)
