"""What a run reports: per-chunk figures (kept with each part, so a resumed run still knows
them) and the summary JSON written beside the output."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from app.batch.validation import MAX_EXAMPLES, RowError


@dataclass
class ChunkStats:
    """One chunk's outcome. ``written`` is False when ``--fail-fast`` stopped the run at it."""

    index: int
    start: int
    rows: int
    failed: int
    runtime: str
    seconds: float
    reasons: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    unknown_categories: dict[str, int] = field(default_factory=dict)
    written: bool = True

    @classmethod
    def of(
        cls,
        index: int,
        start: int,
        rows: int,
        errors: Sequence[RowError],
        unknown_categories: Mapping[str, int],
        runtime: str,
        seconds: float,
    ) -> ChunkStats:
        return cls(
            index=index,
            start=start,
            rows=rows,
            failed=len(errors),
            runtime=runtime,
            seconds=seconds,
            reasons=dict(Counter(error.reason for error in errors)),
            examples=[asdict(error) for error in errors[:MAX_EXAMPLES]],
            unknown_categories=dict(unknown_categories),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChunkStats:
        return cls(**dict(data))


@dataclass(frozen=True)
class Totals:
    """The figures of a set of chunks, added up."""

    chunks: int
    rows: int
    failed: int
    reasons: dict[str, int]
    examples: list[dict[str, Any]]
    unknown_categories: dict[str, int]

    @classmethod
    def of(cls, stats: Iterable[ChunkStats]) -> Totals:
        ordered = sorted(stats, key=lambda s: s.index)
        reasons: Counter[str] = Counter()
        unknown: Counter[str] = Counter()
        examples: list[dict[str, Any]] = []
        for item in ordered:
            reasons.update(item.reasons)
            unknown.update(item.unknown_categories)
            examples.extend(item.examples[: MAX_EXAMPLES - len(examples)])
        return cls(
            chunks=len(ordered),
            rows=sum(s.rows for s in ordered),
            failed=sum(s.failed for s in ordered),
            reasons=dict(sorted(reasons.items())),
            examples=examples,
            unknown_categories=dict(sorted(unknown.items())),
        )

    def failures(self) -> dict[str, Any]:
        return {"by_reason": self.reasons, "examples": self.examples}
