"""Which arm serves a request, and which shadows see it mirrored.

Assignment is sticky without a round trip: a request that carries a key (a user id, say) is
placed on a point of [0, 1) by a keyed hash of the key and the experiment (primary and
candidate tags), so the same key reaches the same arm on every worker and replica and across
restarts, for as long as the weights stay. The candidates take consecutive ranges of that
interval in spec order and the primary the rest, so changing one weight moves only the keys
between the old and the new boundary. Without a key the point is random.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping

from app.registry.spec import SpecBody

SCALE = 2**64


class Router:
    def __init__(self, spec: SpecBody, weights: Mapping[str, float] | None = None) -> None:
        """``weights`` (percent per candidate) replace the spec's, e.g. those of a bandit."""
        self.primary = spec.primary
        chosen = {c.tag: c.weight for c in spec.candidates} | dict(weights or {})
        bounds: list[tuple[float, str]] = []
        edge = 0.0
        for candidate in spec.candidates:
            edge = min(1.0, edge + chosen[candidate.tag] / 100)
            bounds.append((edge, candidate.tag))
        self._bounds = bounds
        self.weights = {self.primary: round((1.0 - edge) * 100, 6)} | {
            tag: chosen[tag] for _, tag in bounds
        }
        self._salt = ("\x1f".join([self.primary, *(tag for _, tag in bounds)]) + "\x1e").encode()
        self._shadows = [(s.tag, s.percent / 100) for s in spec.shadows]
        # Traffic assignment, not security: a fast, unpredictable-enough generator.
        self._random = random.Random()  # noqa: S311

    @property
    def single(self) -> bool:
        """Only the primary serves: no choice to make."""
        return not self._bounds

    def point(self, key: str | None) -> float:
        if key is None:
            return self._random.random()
        digest = hashlib.blake2b(self._salt + key.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / SCALE

    def choose(self, key: str | None = None) -> str:
        """The tag that serves a request with this key (or none)."""
        if not self._bounds:
            return self.primary
        point = self.point(key)
        for edge, tag in self._bounds:
            if point < edge:
                return tag
        return self.primary

    def shadows(self) -> list[str]:
        """The shadows that see this request mirrored (each by its own percent)."""
        if not self._shadows:
            return []
        draw = self._random.random
        return [tag for tag, share in self._shadows if share >= 1.0 or draw() < share]
