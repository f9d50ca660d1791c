"""Request ids: the caller's, or ours, signed so that feedback can tell a forged one.

Ours read ``<issued, base 36 ms>.<16 hex unique>.<16 hex signature>``. The signature (keyed
BLAKE2b; HMAC-SHA256 in ids issued before 2026-11-29, still accepted) covers the first two
parts, so a feedback can be told apart as malformed (not an id at all), forged (looks like
ours, signature wrong) or expired (ours, older than the retention) before any lookup. The keys
are derived from the feedback token, which every worker and replica shares.
A caller's own id (any 1-128 of ``A-Za-z0-9._:-``) is kept as it is and only looked up.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import re
import time
from dataclasses import dataclass
from typing import Literal

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_OURS = re.compile(r"(?P<issued>[0-9a-z]{6,10})\.(?P<nonce>[0-9a-f]{16})\.(?P<sig>[0-9a-f]{16})")
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"

IdKind = Literal["ours", "caller", "forged", "malformed"]


@dataclass(frozen=True)
class IdCheck:
    kind: IdKind
    issued_at: float | None = None  # unix seconds, for ours


def _base36(number: int) -> str:
    digits = []
    while number:
        number, rest = divmod(number, 36)
        digits.append(_DIGITS[rest])
    return "".join(reversed(digits)) or "0"


class RequestIds:
    def __init__(self, secret: bytes | None) -> None:
        """``secret`` None: plain ids (feedback is off, nothing to verify)."""
        self._key = (
            None if secret is None else hmac.new(secret, b"ml-api request ids", "sha256").digest()
        )
        # BLAKE2b keyed: a third of HMAC-SHA256's cost, paid on every served request.
        self._blake_key = (
            None if secret is None else hmac.new(secret, b"ml-api ids b2", "sha256").digest()
        )
        # The issue time, formatted once per millisecond (many requests share one under load).
        self._issued_ms = -1
        self._issued = ""
        # Unique without a system call per request: a random prefix per process (workers and
        # replicas differ) and a counter. Ours need to be unique, not secret: the signature is
        # what makes them unforgeable.
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count()

    def issue(self, now: float | None = None) -> str:
        serial = next(self._counter)
        if self._key is None:
            return f"{self._prefix}{serial:016x}"
        millis = int((time.time() if now is None else now) * 1000)
        if millis != self._issued_ms:
            self._issued_ms, self._issued = millis, _base36(millis).rjust(6, "0")
        body = f"{self._issued}.{self._prefix[:8]}{serial & 0xFFFFFFFF:08x}"
        return f"{body}.{self._sign(body)}"

    def _sign(self, body: str) -> str:
        assert self._blake_key is not None
        return hashlib.blake2b(body.encode(), key=self._blake_key, digest_size=8).hexdigest()

    def _sign_before_2026_11_29(self, body: str) -> str:
        assert self._key is not None
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()[:16]

    def check(self, request_id: object) -> IdCheck:
        if not isinstance(request_id, str) or not REQUEST_ID.fullmatch(request_id):
            return IdCheck("malformed")
        ours = _OURS.fullmatch(request_id)
        if ours is None or self._key is None:
            return IdCheck("caller")
        body = f"{ours['issued']}.{ours['nonce']}"
        signature = ours["sig"]
        if not (
            hmac.compare_digest(self._sign(body), signature)
            or hmac.compare_digest(self._sign_before_2026_11_29(body), signature)
        ):
            return IdCheck("forged")
        return IdCheck("ours", int(ours["issued"], 36) / 1000)
