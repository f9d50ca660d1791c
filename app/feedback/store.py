"""The shared, durable state of feedback: what was predicted, what came back, counters, bandits.

Every worker and replica reads and writes the same store, and it outlives restarts: SQLite
beside a local registry on one machine (WAL mode, several processes), Redis for a cluster.

Contents, all under one namespace (the registry's, so two deployments never mix):

- a record per served request whose id does not carry it (a caller's id, or too many rows:
  see ``app.feedback.ids``): tag, role, spec revision, labels, time, kept for the retention
  period, so feedback can be joined to it;
- a mark per (request id, row) that received feedback, so the same feedback counts once;
- counters per scope and tag: ``rev:<n>`` (one spec revision: the running split's A/B
  figures) and ``all`` (everything a tag ever served);
- the bandit's state per spec revision, and short locks so one worker computes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol
from urllib.parse import urlsplit

import fsspec
import orjson

from app.errors import FeedbackStoreUnavailable, InvalidSettings

logger = logging.getLogger(__name__)

ALL = "all"


def revision_scope(revision: int) -> str:
    return f"rev:{revision}"


class PredictionRecord(NamedTuple):
    """One served request. A named tuple: one is built per request on the serving path."""

    request_id: str
    tag: str
    role: str
    revision: int
    labels: list[str]
    at: float


def record_body(record: PredictionRecord) -> str:
    """A record as stored: a JSON array of its fields (one per served request, written by the
    thread that shares the GIL with serving; field names would double the cost)."""
    return orjson.dumps(record[:]).decode()


def parse_record(body: str | bytes) -> PredictionRecord:
    """A stored record: an array, or an object as written before 2026-11-29 (such records
    live out their retention)."""
    fields = orjson.loads(body)
    if isinstance(fields, dict):
        return PredictionRecord(**fields)
    return PredictionRecord(*fields)


# Expired predictions and feedback marks are deleted at most this often (lookups ignore them).
PURGE_EVERY_SECONDS = 60.0

Deltas = Sequence[tuple[str, str, Mapping[str, float]]]  # (scope, tag, field -> increment)
FeedbackEntry = tuple[str, int, Deltas]


class FeedbackStore(Protocol):
    def save_predictions(self, records: Sequence[PredictionRecord], ttl: float) -> None: ...

    def predictions(self, ids: Sequence[str]) -> dict[str, PredictionRecord]: ...

    def record_feedback(self, entries: Sequence[FeedbackEntry], ttl: float) -> list[bool]:
        """For each (request id, row, deltas): if that row had no feedback yet, mark it and
        add its deltas, atomically (a crash never counts it without marking it or marks it
        without counting it). True for each entry that was new."""
        ...

    def add(self, deltas: Deltas) -> None: ...

    def totals(self, scope: str) -> dict[str, dict[str, float]]:
        """tag -> field -> value for ``scope``."""
        ...

    def load_state(self, name: str) -> dict[str, Any] | None: ...

    def save_state(self, name: str, body: Mapping[str, Any]) -> None: ...

    def try_lock(self, name: str, seconds: float) -> bool: ...

    def release_lock(self, name: str) -> None: ...

    def append_event(self, stream: str, body: Mapping[str, Any], keep: int) -> None:
        """Append to a bounded log (newest kept): decisions of the retraining trigger."""
        ...

    def events(self, stream: str, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` entries of a log, newest first."""
        ...

    def close(self) -> None: ...


def _unavailable(kind: str, exc: Exception) -> FeedbackStoreUnavailable:
    return FeedbackStoreUnavailable(f"feedback store ({kind}) unreachable: {exc}")


class SqliteStore:
    """One SQLite file shared by the processes of one machine.

    The predictions and feedback marks, written once per served request or feedback, are
    tables clustered on their key (``WITHOUT ROWID``): one B-tree insert per row instead of
    two. Files created before 2026-11-29 keep their rowid tables, which hold the same columns
    and key and work the same.
    """

    def __init__(self, path: Path, namespace: str) -> None:
        self.path = path
        self._ns = namespace
        self._lock = threading.Lock()
        self._purged_at = 0.0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=10, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(
                """
                CREATE TABLE IF NOT EXISTS predictions (
                    ns TEXT, id TEXT, body TEXT, expires REAL, PRIMARY KEY (ns, id))
                    WITHOUT ROWID;
                CREATE TABLE IF NOT EXISTS feedback (
                    ns TEXT, id TEXT, row INTEGER, expires REAL, PRIMARY KEY (ns, id, row))
                    WITHOUT ROWID;
                CREATE TABLE IF NOT EXISTS counters (
                    ns TEXT, scope TEXT, tag TEXT, field TEXT, value REAL,
                    PRIMARY KEY (ns, scope, tag, field));
                CREATE TABLE IF NOT EXISTS state (
                    ns TEXT, name TEXT, body TEXT, PRIMARY KEY (ns, name));
                CREATE TABLE IF NOT EXISTS locks (
                    ns TEXT, name TEXT, until REAL, PRIMARY KEY (ns, name));
                CREATE TABLE IF NOT EXISTS events (
                    ns TEXT, stream TEXT, seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT);
                CREATE INDEX IF NOT EXISTS predictions_expires ON predictions (expires);
                CREATE INDEX IF NOT EXISTS feedback_expires ON feedback (expires);
                """
            )
        except sqlite3.Error as exc:
            raise _unavailable("sqlite", exc) from exc

    def _run(self, work: Any) -> Any:
        with self._lock:
            try:
                with self._db:
                    return work(self._db)
            except sqlite3.Error as exc:
                raise _unavailable("sqlite", exc) from exc

    def save_predictions(self, records: Sequence[PredictionRecord], ttl: float) -> None:
        now = time.time()
        # One statement for the whole flush, the records as one JSON array: the sqlite3 module
        # releases the GIL around every step, and executemany's step per row handed the GIL
        # back and forth with the busy event loop hundreds of times per flush (each handoff a
        # context switch, and under saturation up to a switch interval's wait).
        payload = orjson.dumps([record[:] for record in records]).decode()
        purge = now - self._purged_at >= PURGE_EVERY_SECONDS

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR REPLACE INTO predictions "
                "SELECT ?, json_extract(value, '$[0]'), value, ? FROM json_each(?)",
                (self._ns, now + ttl, payload),
            )
            if purge:  # expired rows are never read (lookups filter on expires): no hurry
                db.execute("DELETE FROM predictions WHERE expires < ?", (now,))
                db.execute("DELETE FROM feedback WHERE expires < ?", (now,))

        self._run(work)
        if purge:
            self._purged_at = now

    def predictions(self, ids: Sequence[str]) -> dict[str, PredictionRecord]:
        now = time.time()

        def work(db: sqlite3.Connection) -> dict[str, PredictionRecord]:
            found: dict[str, PredictionRecord] = {}
            unique = list(dict.fromkeys(ids))
            for start in range(0, len(unique), 500):
                chunk = unique[start : start + 500]
                marks = ",".join("?" * len(chunk))
                query = (
                    f"SELECT id, body FROM predictions WHERE ns = ? AND expires >= ? "  # noqa: S608
                    f"AND id IN ({marks})"
                )
                for request_id, body in db.execute(query, (self._ns, now, *chunk)):
                    found[request_id] = parse_record(body)
            return found

        result: dict[str, PredictionRecord] = self._run(work)
        return result

    def record_feedback(self, entries: Sequence[FeedbackEntry], ttl: float) -> list[bool]:
        expires = time.time() + ttl

        def work(db: sqlite3.Connection) -> list[bool]:  # one transaction
            fresh = []
            for request_id, row, deltas in entries:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO feedback VALUES (?, ?, ?, ?)",
                    (self._ns, request_id, row, expires),
                )
                fresh.append(cursor.rowcount == 1)
                if fresh[-1]:
                    self._increment(db, deltas)
            return fresh

        result: list[bool] = self._run(work)
        return result

    def _increment(self, db: sqlite3.Connection, deltas: Deltas) -> None:
        db.executemany(
            "INSERT INTO counters VALUES (?, ?, ?, ?, ?) ON CONFLICT (ns, scope, tag, field) "
            "DO UPDATE SET value = value + excluded.value",
            [
                (self._ns, scope, tag, field, value)
                for scope, tag, fields in deltas
                for field, value in fields.items()
            ],
        )

    def add(self, deltas: Deltas) -> None:
        if deltas:
            self._run(lambda db: self._increment(db, deltas))

    def totals(self, scope: str) -> dict[str, dict[str, float]]:
        def work(db: sqlite3.Connection) -> dict[str, dict[str, float]]:
            totals: dict[str, dict[str, float]] = {}
            for tag, field, value in db.execute(
                "SELECT tag, field, value FROM counters WHERE ns = ? AND scope = ?",
                (self._ns, scope),
            ):
                totals.setdefault(tag, {})[field] = value
            return totals

        result: dict[str, dict[str, float]] = self._run(work)
        return result

    def load_state(self, name: str) -> dict[str, Any] | None:
        def work(db: sqlite3.Connection) -> dict[str, Any] | None:
            row = db.execute(
                "SELECT body FROM state WHERE ns = ? AND name = ?", (self._ns, name)
            ).fetchone()
            return None if row is None else dict(json.loads(row[0]))

        result: dict[str, Any] | None = self._run(work)
        return result

    def save_state(self, name: str, body: Mapping[str, Any]) -> None:
        self._run(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO state VALUES (?, ?, ?)", (self._ns, name, json.dumps(body))
            )
        )

    def try_lock(self, name: str, seconds: float) -> bool:
        now = time.time()

        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "INSERT INTO locks VALUES (?, ?, ?) ON CONFLICT (ns, name) "
                "DO UPDATE SET until = excluded.until WHERE locks.until < ?",
                (self._ns, name, now + seconds, now),
            )
            return cursor.rowcount == 1

        result: bool = self._run(work)
        return result

    def release_lock(self, name: str) -> None:
        self._run(
            lambda db: db.execute("DELETE FROM locks WHERE ns = ? AND name = ?", (self._ns, name))
        )

    def append_event(self, stream: str, body: Mapping[str, Any], keep: int) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO events (ns, stream, body) VALUES (?, ?, ?)",
                (self._ns, stream, json.dumps(body)),
            )
            db.execute(
                "DELETE FROM events WHERE ns = ? AND stream = ? AND seq NOT IN (SELECT seq FROM "
                "events WHERE ns = ? AND stream = ? ORDER BY seq DESC LIMIT ?)",
                (self._ns, stream, self._ns, stream, keep),
            )

        self._run(work)

    def events(self, stream: str, limit: int) -> list[dict[str, Any]]:
        def work(db: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = db.execute(
                "SELECT body FROM events WHERE ns = ? AND stream = ? ORDER BY seq DESC LIMIT ?",
                (self._ns, stream, limit),
            )
            return [dict(json.loads(body)) for (body,) in rows]

        result: list[dict[str, Any]] = self._run(work)
        return result

    def close(self) -> None:
        with self._lock:
            self._db.close()


# Marks one (request id, row) and, only if it was not marked before, adds its increments: a
# script runs atomically in Redis. KEYS[1] the mark; then per increment a counters hash and
# its scope's tag set; ARGV[1] the mark's TTL in ms, then per increment field, value, tag.
_RECORD_FEEDBACK = """
if not redis.call('SET', KEYS[1], 1, 'NX', 'PX', ARGV[1]) then return 0 end
local k = 2
for i = 2, #ARGV, 3 do
  redis.call('HINCRBYFLOAT', KEYS[k], ARGV[i], ARGV[i + 1])
  redis.call('SADD', KEYS[k + 1], ARGV[i + 2])
  k = k + 2
end
return 1
"""


class RedisStore:
    """A Redis server shared by every worker and replica of a cluster."""

    def __init__(self, url: str, namespace: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(
            url, socket_timeout=1.0, socket_connect_timeout=1.0, health_check_interval=10
        )
        self._ns = f"ml-api:{namespace}"
        self._errors = (redis.RedisError, OSError)

    def _key(self, *parts: object) -> str:
        return ":".join([self._ns, *map(str, parts)])

    def _run(self, work: Any) -> Any:
        try:
            return work(self._redis)
        except self._errors as exc:
            raise _unavailable("redis", exc) from exc

    def save_predictions(self, records: Sequence[PredictionRecord], ttl: float) -> None:
        def work(r: Any) -> None:
            pipe = r.pipeline(transaction=False)
            for record in records:
                pipe.set(
                    self._key("pred", record.request_id),
                    record_body(record),
                    px=int(ttl * 1000),
                )
            pipe.execute()

        self._run(work)

    def predictions(self, ids: Sequence[str]) -> dict[str, PredictionRecord]:
        unique = list(dict.fromkeys(ids))
        if not unique:
            return {}
        values = self._run(lambda r: r.mget([self._key("pred", i) for i in unique]))
        return {
            request_id: parse_record(value)
            for request_id, value in zip(unique, values, strict=True)
            if value is not None
        }

    def record_feedback(self, entries: Sequence[FeedbackEntry], ttl: float) -> list[bool]:
        def work(r: Any) -> list[bool]:
            script = r.register_script(_RECORD_FEEDBACK)
            pipe = r.pipeline(transaction=False)
            for request_id, row, deltas in entries:
                keys: list[str] = [self._key("fb", request_id, row)]
                args: list[str | int] = [int(ttl * 1000)]
                for scope, tag, fields in deltas:
                    for field, value in fields.items():
                        keys += [self._key("counters", scope, tag), self._key("tags", scope)]
                        args += [field, repr(float(value)), tag]
                script(keys=keys, args=args, client=pipe)
            return [bool(done) for done in pipe.execute()]

        result: list[bool] = self._run(work)
        return result

    def add(self, deltas: Deltas) -> None:
        def work(r: Any) -> None:
            pipe = r.pipeline(transaction=False)
            for scope, tag, fields in deltas:
                key = self._key("counters", scope, tag)
                for field, value in fields.items():
                    pipe.hincrbyfloat(key, field, value)
                pipe.sadd(self._key("tags", scope), tag)
            pipe.execute()

        if deltas:
            self._run(work)

    def totals(self, scope: str) -> dict[str, dict[str, float]]:
        def work(r: Any) -> dict[str, dict[str, float]]:
            tags = sorted(t.decode() for t in r.smembers(self._key("tags", scope)))
            pipe = r.pipeline(transaction=False)
            for tag in tags:
                pipe.hgetall(self._key("counters", scope, tag))
            return {
                tag: {k.decode(): float(v) for k, v in fields.items()}
                for tag, fields in zip(tags, pipe.execute(), strict=True)
            }

        result: dict[str, dict[str, float]] = self._run(work)
        return result

    def load_state(self, name: str) -> dict[str, Any] | None:
        raw = self._run(lambda r: r.get(self._key("state", name)))
        return None if raw is None else dict(json.loads(raw))

    def save_state(self, name: str, body: Mapping[str, Any]) -> None:
        self._run(lambda r: r.set(self._key("state", name), json.dumps(body)))

    def try_lock(self, name: str, seconds: float) -> bool:
        return bool(
            self._run(lambda r: r.set(self._key("lock", name), 1, nx=True, px=int(seconds * 1000)))
        )

    def release_lock(self, name: str) -> None:
        self._run(lambda r: r.delete(self._key("lock", name)))

    def append_event(self, stream: str, body: Mapping[str, Any], keep: int) -> None:
        def work(r: Any) -> None:
            pipe = r.pipeline(transaction=True)
            pipe.lpush(self._key("events", stream), json.dumps(body))
            pipe.ltrim(self._key("events", stream), 0, keep - 1)
            pipe.execute()

        self._run(work)

    def events(self, stream: str, limit: int) -> list[dict[str, Any]]:
        raw = self._run(lambda r: r.lrange(self._key("events", stream), 0, limit - 1))
        return [dict(json.loads(body)) for body in raw]

    def close(self) -> None:
        self._redis.close()


def default_state_url(registry_url: str) -> tuple[str, bool]:
    """The store when ML_API_STATE_URL is unset, and whether it is shared: SQLite beside a
    local registry (every process on this machine shares it); for a remote registry a file in
    the temporary folder, which other replicas do not see."""
    protocol, path = fsspec.core.split_protocol(registry_url)
    if protocol in {None, "file", "local"}:
        return f"sqlite:///{Path(path).resolve() / 'feedback.sqlite3'}", True
    return f"sqlite:///{Path(tempfile.gettempdir()).resolve() / 'ml-api-feedback.sqlite3'}", False


def namespace_of(registry_url: str) -> str:
    """Keys of one registry's deployment: two deployments sharing a Redis never mix."""
    return hashlib.sha256(registry_url.encode()).hexdigest()[:12]


class StoreHandle:
    """Opens the store on first use and again after a failed open: a store that is down when
    a worker starts does not keep that worker from serving, or from reconnecting later."""

    def __init__(self, url: str, namespace: str) -> None:
        scheme = urlsplit(url).scheme
        if scheme not in {"sqlite", "redis", "rediss", "unix"}:
            raise InvalidSettings(
                f"ML_API_STATE_URL {url!r}: expected sqlite:////path or redis://host:port/db"
            )
        self.url = url
        self._namespace = namespace
        self._store: FeedbackStore | None = None
        self._lock = threading.Lock()

    def __call__(self) -> FeedbackStore:
        store = self._store
        if store is None:
            with self._lock:
                if self._store is None:
                    self._store = open_store(self.url, self._namespace)
                store = self._store
        return store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def open_store(url: str, namespace: str) -> FeedbackStore:
    """``sqlite:///path/to/file`` or ``redis://host:port/db`` (``rediss://`` for TLS)."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        path = url.removeprefix("sqlite:///")
        if not path.startswith("/"):
            raise InvalidSettings(f"ML_API_STATE_URL {url!r}: use sqlite:////absolute/path")
        return SqliteStore(Path(path), namespace)
    if scheme in {"redis", "rediss", "unix"}:
        return RedisStore(url, namespace)
    raise InvalidSettings(
        f"ML_API_STATE_URL {url!r}: expected sqlite:///path or redis://host:port/db"
    )
