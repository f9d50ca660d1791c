"""Request ids: the caller's, or ours, signed so that feedback can tell a forged one.

Ours come in two forms, both signed (keyed BLAKE2b; HMAC-SHA256 in ids issued before
2026-11-29, still accepted):

- sealed, ``<issued, base 36 ms>.<16 hex unique>.<what was predicted>.<16 hex signature>``:
  the third part (base64url of a JSON array) carries the model tag, its role, the spec revision
  and the predicted labels. Feedback reads the prediction from the id itself, so serving such a
  request writes nothing anywhere. Issued whenever the id stays within 128 characters (one or
  a few rows, the common case);
- plain, ``<issued>.<16 hex unique>.<16 hex signature>``: for larger requests, whose record
  goes to the feedback store off the request path.

The signature covers every other part, so a feedback can be told apart as malformed (not an id
at all), forged (looks like ours, signature wrong) or expired (ours, older than the retention)
before any lookup, and a sealed prediction cannot be altered. The keys are derived from the
feedback token, which every worker and replica shares. A caller's own id (any 1-128 of
``A-Za-z0-9._:-``) is kept as it is and only looked up.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from app.feedback.store import PredictionRecord

MAX_ID_LENGTH = 128
REQUEST_ID = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_ID_LENGTH}}}")
_OURS = re.compile(r"(?P<issued>[0-9a-z]{6,10})\.(?P<nonce>[0-9a-f]{16})\.(?P<sig>[0-9a-f]{16})")
_MAX_PAYLOAD = 100  # base64url characters, a loose bound: seal() keeps the whole id in 128
_SEALED = re.compile(
    r"(?P<issued>[0-9a-z]{6,10})\.(?P<nonce>[0-9a-f]{16})"
    rf"\.(?P<payload>[A-Za-z0-9_-]{{4,{_MAX_PAYLOAD}}})\.(?P<sig>[0-9a-f]{{16}})"
)
_SIGNATURE_PART = len(".") + 16  # the dot and 16 hex digits
# Roles that answer a request, as one character in a sealed id.
_ROLE_CODES = {"primary": "p", "candidate": "c"}
_ROLES = {code: role for role, code in _ROLE_CODES.items()}
# Sealed payloads are cached per (tag, role, revision, labels): single-row traffic repeats few.
_PAYLOAD_CACHE_SIZE = 4096
_PAYLOAD_CACHE_ROWS = 4
# Each label takes at least 4 bytes of JSON (5 of base64): more rows never fit in 128 characters.
_MAX_SEALED_ROWS = 20
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"

IdKind = Literal["ours", "caller", "forged", "malformed"]


@dataclass(frozen=True)
class IdCheck:
    kind: IdKind
    issued_at: float | None = None  # unix seconds, for ours
    record: PredictionRecord | None = None  # what a sealed id of ours says was predicted


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
        # The issue time, formatted once per millisecond (many requests share one under load).
        self._issued_ms = -1
        self._issued = ""
        # Unique without a system call per request: a random prefix per process (workers and
        # replicas differ) and a counter. Ours need to be unique, not secret: the signature is
        # what makes them unforgeable.
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count()
        self._payloads: dict[tuple[Any, ...], str] = {}
        # BLAKE2b keyed: a third of HMAC-SHA256's cost, paid on every served request. Keyed
        # once: each signature copies the keyed state instead of keying anew.
        self._plain_hasher = self._sealed_hasher = None
        if secret is not None:
            blake_key = hmac.new(secret, b"ml-api ids b2", "sha256").digest()
            self._plain_hasher = hashlib.blake2b(key=blake_key, digest_size=8)
            # Its own personalisation: a sealed id's signature never passes as a plain one's.
            self._sealed_hasher = hashlib.blake2b(
                key=blake_key, digest_size=8, person=b"ml-api sealed"
            )

    def issue(self, now: float | None = None) -> str:
        serial = next(self._counter)
        if self._key is None:
            return f"{self._prefix}{serial:016x}"
        body = self._unique(serial, now)
        return f"{body}.{self._sign(body)}"

    def seal(
        self, tag: str, role: str, revision: int, labels: list[str], now: float | None = None
    ) -> str | None:
        """An id that carries this prediction, or None when it would not fit (or ids are not
        signed: feedback is off)."""
        if self._key is None:
            return None
        payload = self._payload(tag, role, revision, labels)
        if payload is None:
            return None
        body = f"{self._unique(next(self._counter), now)}.{payload}"
        if len(body) + _SIGNATURE_PART > MAX_ID_LENGTH:
            return None
        return f"{body}.{self._sign(body, sealed=True)}"

    def _unique(self, serial: int, now: float | None) -> str:
        millis = int((time.time() if now is None else now) * 1000)
        if millis != self._issued_ms:
            self._issued_ms, self._issued = millis, _base36(millis).rjust(6, "0")
        return f"{self._issued}.{self._prefix[:8]}{serial & 0xFFFFFFFF:08x}"

    def _payload(self, tag: str, role: str, revision: int, labels: list[str]) -> str | None:
        if role not in _ROLE_CODES or len(labels) > _MAX_SEALED_ROWS:
            return None
        if len(labels) > _PAYLOAD_CACHE_ROWS:
            return _encode_payload(tag, role, revision, labels)
        key = (tag, role, revision, *labels)
        if key in self._payloads:
            return self._payloads[key]
        if len(self._payloads) >= _PAYLOAD_CACHE_SIZE:
            self._payloads.clear()
        payload = self._payloads[key] = _encode_payload(tag, role, revision, labels)
        return payload

    def _sign(self, body: str, *, sealed: bool = False) -> str:
        keyed = self._sealed_hasher if sealed else self._plain_hasher
        assert keyed is not None
        hasher = keyed.copy()
        hasher.update(body.encode())
        return hasher.hexdigest()

    def _sign_before_2026_11_29(self, body: str) -> str:
        assert self._key is not None
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()[:16]

    def check(self, request_id: object) -> IdCheck:
        if not isinstance(request_id, str) or not REQUEST_ID.fullmatch(request_id):
            return IdCheck("malformed")
        if self._key is None:
            return IdCheck("caller")
        sealed = _SEALED.fullmatch(request_id)
        if sealed is not None:
            return self._check_sealed(request_id, sealed)
        ours = _OURS.fullmatch(request_id)
        if ours is None:
            return IdCheck("caller")
        body = f"{ours['issued']}.{ours['nonce']}"
        signature = ours["sig"]
        if not (
            hmac.compare_digest(self._sign(body), signature)
            or hmac.compare_digest(self._sign_before_2026_11_29(body), signature)
        ):
            return IdCheck("forged")
        return IdCheck("ours", int(ours["issued"], 36) / 1000)

    def _check_sealed(self, request_id: str, sealed: re.Match[str]) -> IdCheck:
        body = f"{sealed['issued']}.{sealed['nonce']}.{sealed['payload']}"
        if not hmac.compare_digest(self._sign(body, sealed=True), sealed["sig"]):
            return IdCheck("forged")
        issued_at = int(sealed["issued"], 36) / 1000
        record = _unseal(request_id, sealed["payload"], issued_at)
        if record is None:  # signed by us yet unreadable: never issued by this code
            return IdCheck("forged")
        return IdCheck("ours", issued_at, record)


def _encode_payload(tag: str, role: str, revision: int, labels: list[str]) -> str:
    document = orjson.dumps([tag, _ROLE_CODES[role], revision, labels])
    return base64.urlsafe_b64encode(document).rstrip(b"=").decode()


def _unseal(request_id: str, payload: str, issued_at: float) -> PredictionRecord | None:
    try:
        fields = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, orjson.JSONDecodeError, ValueError):
        return None
    if not (isinstance(fields, list) and len(fields) == 4):
        return None
    tag, role, revision, labels = fields
    if not (
        isinstance(tag, str)
        and role in _ROLES
        and type(revision) is int
        and isinstance(labels, list)
        and labels
        and all(isinstance(label, str) for label in labels)
    ):
        return None
    return PredictionRecord(request_id, tag, _ROLES[role], revision, labels, issued_at)
