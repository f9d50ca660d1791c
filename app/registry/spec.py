"""``deployment.json``: which experiments serve, in which roles, and how traffic is shared.

The spec generalises ``active.json`` (one tag): a ``primary``, weighted ``candidates`` (canary
or A/B arms: each gets ``weight`` percent of the traffic, the primary the rest) and
``shadows`` (each sees ``percent`` of the requests mirrored; users never see its answers).
The file records who changed it, when and why, the spec before (for rollback) and a short
history, so an operator can tell what happened, including the canary guard's own actions.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.registry.meta import TAG_PATTERN

MAX_CANDIDATES = 10
MAX_SHADOWS = 5
HISTORY_LENGTH = 50

SpecAction = Literal[
    "initial", "put", "replace", "promote", "rollback", "guard", "bandit", "publish", "shadow"
]


def _safe_tag(value: str) -> str:
    if not TAG_PATTERN.fullmatch(value):
        raise ValueError(
            f"invalid experiment tag {value!r}: use 1-64 letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return value


class Candidate(BaseModel):
    """A canary or A/B arm: ``weight`` percent of the requests are served by ``tag``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tag: str
    weight: float = Field(ge=0, le=100, description="Percent of traffic, 0-100.")

    _tag = field_validator("tag")(_safe_tag)


class Shadow(BaseModel):
    """A mirror: ``percent`` of the requests are also scored by ``tag`` after the answer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tag: str
    percent: float = Field(gt=0, le=100, description="Percent of requests mirrored, 0-100.")

    _tag = field_validator("tag")(_safe_tag)


class GuardSettings(BaseModel):
    """When the canary guard takes a candidate out (compared with the primary, per worker)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    min_requests: int = Field(
        default=200, ge=10, description="Requests a candidate must have served before judged."
    )
    max_error_rate_increase: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="Candidate error rate may exceed the primary's by at most this (absolute).",
    )
    max_p99_ratio: float = Field(
        default=2.0, ge=1, description="Candidate p99 latency may be at most this × primary's."
    )
    p99_slack_ms: float = Field(
        default=5.0, ge=0, description="Added to the p99 bound, so microsecond noise never trips."
    )
    window_seconds: float = Field(
        default=60.0, gt=0, description="Only requests of the last this many seconds count."
    )


class BanditPolicy(BaseModel):
    """Candidates' weights set from feedback instead of fixed (the feedback issue)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["thompson", "epsilon_greedy"] = "thompson"
    epsilon: float = Field(default=0.1, ge=0, le=1)
    warmup_feedbacks: int = Field(default=50, ge=0)
    min_share: float = Field(default=1.0, ge=0, le=50, description="Floor of each arm, percent.")
    interval_seconds: float = Field(default=5.0, ge=0.5, le=3600)


class AnalysisSettings(BaseModel):
    """How the A/B report judges the split (the feedback issue)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alpha: float = Field(default=0.05, gt=0, lt=0.5, description="Significance level.")
    power: float = Field(default=0.8, gt=0.5, lt=1, description="Power for the sample size.")
    min_effect: float = Field(
        default=0.05, gt=0, lt=1, description="Smallest difference in success rate worth finding."
    )
    srm_p_threshold: float = Field(
        default=0.001, gt=0, lt=0.5, description="Sample-ratio mismatch flagged below this p."
    )


class SpecBody(BaseModel):
    """What a person writes: roles, weights and settings (``PUT /deployment``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    primary: str
    candidates: list[Candidate] = Field(default_factory=list, max_length=MAX_CANDIDATES)
    shadows: list[Shadow] = Field(default_factory=list, max_length=MAX_SHADOWS)
    guard: GuardSettings = Field(default_factory=GuardSettings)
    bandit: BanditPolicy | None = None
    analysis: AnalysisSettings = Field(default_factory=AnalysisSettings)

    _primary = field_validator("primary")(_safe_tag)

    @model_validator(mode="after")
    def _roles_are_consistent(self) -> SpecBody:
        seen: dict[str, str] = {self.primary: "primary"}
        for role, tags in (
            ("candidate", [c.tag for c in self.candidates]),
            ("shadow", [s.tag for s in self.shadows]),
        ):
            for tag in tags:
                if tag in seen:
                    raise ValueError(
                        f"tag {tag!r} appears twice (as {seen[tag]} and as {role}): "
                        "a tag has one role"
                    )
                seen[tag] = role
        total = sum(c.weight for c in self.candidates)
        if total > 100:
            raise ValueError(
                f"candidates' weights add up to {total:g} %: at most 100 (the primary gets "
                "the rest)"
            )
        if self.bandit is not None and not self.candidates:
            raise ValueError("bandit: a bandit needs at least one candidate")
        return self

    @property
    def tags(self) -> list[str]:
        """Every tag the spec serves, primary first."""
        return [self.primary, *(c.tag for c in self.candidates), *(s.tag for s in self.shadows)]

    def role_of(self, tag: str) -> str | None:
        if tag == self.primary:
            return "primary"
        if any(c.tag == tag for c in self.candidates):
            return "candidate"
        if any(s.tag == tag for s in self.shadows):
            return "shadow"
        return None

    def traffic_shares(self) -> dict[str, float]:
        """Configured percent of requests served by each arm (shadows serve none)."""
        shares = {c.tag: c.weight for c in self.candidates}
        return {self.primary: max(0.0, 100.0 - sum(shares.values())), **shares}


class SpecChange(BaseModel):
    """One line of the spec's history."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    revision: int
    at: datetime
    by: str
    action: SpecAction
    reason: str = ""
    primary: str
    candidates: list[Candidate] = Field(default_factory=list)
    shadows: list[Shadow] = Field(default_factory=list)


class DeploymentRecord(BaseModel):
    """The whole file: the spec serving now, how it came about, and the one before it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    spec: SpecBody
    revision: int = Field(ge=0)
    updated_at: datetime
    updated_by: str = "unknown"
    action: SpecAction = "put"
    reason: str = ""
    previous: SpecBody | None = None
    history: list[SpecChange] = Field(default_factory=list)

    def successor(
        self, spec: SpecBody, *, at: datetime, by: str, action: SpecAction, reason: str = ""
    ) -> DeploymentRecord:
        """The record after a change to ``spec``: revision up, this spec kept for rollback."""
        return self._made(spec, self.revision + 1, at, by, action, reason, self.spec, self.history)

    @classmethod
    def first(
        cls, spec: SpecBody, *, at: datetime, by: str, action: SpecAction, reason: str = ""
    ) -> DeploymentRecord:
        return cls._made(spec, 1, at, by, action, reason, None, [])

    @classmethod
    def _made(
        cls,
        spec: SpecBody,
        revision: int,
        at: datetime,
        by: str,
        action: SpecAction,
        reason: str,
        previous: SpecBody | None,
        history: list[SpecChange],
    ) -> DeploymentRecord:
        change = SpecChange(
            revision=revision,
            at=at,
            by=by,
            action=action,
            reason=reason,
            primary=spec.primary,
            candidates=spec.candidates,
            shadows=spec.shadows,
        )
        return cls(
            spec=spec,
            revision=revision,
            updated_at=at,
            updated_by=by,
            action=action,
            reason=reason,
            previous=previous,
            history=[*history, change][-HISTORY_LENGTH:],
        )
