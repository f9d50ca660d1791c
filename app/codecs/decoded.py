"""What every codec hands the prediction service."""

from __future__ import annotations

from typing import Protocol

from app.serving.inputs import Batch, InputSchema


class Decoded(Protocol):
    """A parsed request, not yet checked against a model."""

    def ignored(self, schema: InputSchema) -> list[str]:
        """Columns the request carried that ``schema`` does not use (named in the answer)."""
        ...

    def to_batch(self, schema: InputSchema) -> Batch:
        """The request's rows, validated against ``schema`` (raises InvalidInput)."""
        ...
