"""The feedback store behaves the same on SQLite and on a real Redis server."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import orjson
import pytest

from app.errors import FeedbackStoreUnavailable, InvalidSettings
from app.feedback.store import (
    ALL,
    FeedbackStore,
    PredictionRecord,
    StoreHandle,
    default_state_url,
    open_store,
    parse_record,
)
from tests.conftest import RedisServer
from tests.local_server import free_port


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> FeedbackStore:
    if request.param == "sqlite":
        return open_store(f"sqlite:///{tmp_path / 'state.sqlite3'}", "ns")
    return open_store(request.getfixturevalue("redis_url"), "ns")


def record(request_id: str, tag: str = "base", rows: int = 2) -> PredictionRecord:
    return PredictionRecord(request_id, tag, "primary", 3, ["Adelie"] * rows, 1000.0)


def test_predictions_round_trip_and_unknown_ids_are_absent(store: FeedbackStore) -> None:
    store.save_predictions([record("a"), record("b", "boost", 1)], ttl=60)
    found = store.predictions(["a", "b", "nope", "a"])
    assert found == {"a": record("a"), "b": record("b", "boost", 1)}


def test_a_large_flush_round_trips_every_record_exactly(store: FeedbackStore) -> None:
    odd = PredictionRecord('id-"quoted"', "tag é", "shadow", 7, ['Adélie "x"', "\\"], 1.5e9 + 0.123)
    many = [record(f"r{i}", rows=1 + i % 3) for i in range(1500)]
    store.save_predictions([*many, odd, record("r7", "boost")], ttl=60)  # r7 again: last wins
    found = store.predictions([r.request_id for r in many] + [odd.request_id])
    assert len(found) == 1501
    assert found[odd.request_id] == odd
    assert found["r7"] == record("r7", "boost")
    assert found["r1499"] == record("r1499", rows=1 + 1499 % 3)


def test_records_written_as_objects_by_the_previous_version_are_still_read(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.sqlite3"
    store = open_store(f"sqlite:///{path}", "ns")
    earlier = orjson.dumps({**record("old")._asdict()}).decode()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO predictions VALUES ('ns', 'old', ?, ?)", (earlier, 2e9))
    store.save_predictions([record("new", "boost", 1)], ttl=60)
    assert store.predictions(["old", "new"]) == {
        "old": record("old"),
        "new": record("new", "boost", 1),
    }
    assert parse_record(earlier) == record("old")


def test_a_store_file_created_by_the_previous_version_keeps_working(tmp_path: Path) -> None:
    """Files created before the key-clustered tables keep their rowid tables."""
    path = tmp_path / "state.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE predictions (
                ns TEXT, id TEXT, body TEXT, expires REAL, PRIMARY KEY (ns, id));
            CREATE TABLE feedback (
                ns TEXT, id TEXT, row INTEGER, expires REAL, PRIMARY KEY (ns, id, row));
            """
        )
    store = open_store(f"sqlite:///{path}", "ns")
    store.save_predictions([record("a")], ttl=60)
    assert store.predictions(["a"]) == {"a": record("a")}
    deltas = [(ALL, "base", {"feedbacks": 1.0})]
    assert store.record_feedback([("a", 0, deltas), ("a", 0, deltas)], ttl=60) == [True, False]
    with sqlite3.connect(path) as db:
        (ddl,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'predictions'").fetchone()
    assert "WITHOUT ROWID" not in ddl
    fresh = tmp_path / "fresh.sqlite3"
    open_store(f"sqlite:///{fresh}", "ns")
    with sqlite3.connect(fresh) as db:
        (ddl,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'predictions'").fetchone()
    assert "WITHOUT ROWID" in ddl


def test_feedback_counts_once_and_with_its_counters_atomically(store: FeedbackStore) -> None:
    deltas = [
        ("rev:3", "base", {"label_n": 1.0, "label_correct": 1.0}),
        (ALL, "base", {"feedbacks": 1.0}),
    ]
    first = store.record_feedback([("a", 0, deltas), ("a", 1, deltas), ("a", 0, deltas)], ttl=60)
    assert first == [True, True, False]
    assert store.record_feedback([("a", 1, deltas)], ttl=60) == [False]
    assert store.totals("rev:3") == {"base": {"label_n": 2.0, "label_correct": 2.0}}
    assert store.totals(ALL) == {"base": {"feedbacks": 2.0}}


def test_concurrent_duplicates_count_once(store: FeedbackStore) -> None:
    deltas = [(ALL, "base", {"feedbacks": 1.0})]
    results: list[bool] = []

    def send() -> None:
        results.extend(store.record_feedback([("same", 0, deltas)], ttl=60))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]
    assert store.totals(ALL)["base"]["feedbacks"] == 1.0


def test_counters_add_up(store: FeedbackStore) -> None:
    store.add(
        [("rev:1", "a", {"assigned": 3.0, "expected": 2.7}), ("rev:1", "b", {"assigned": 1.0})]
    )
    store.add([("rev:1", "a", {"assigned": 2.0})])
    assert store.totals("rev:1") == {
        "a": {"assigned": 5.0, "expected": pytest.approx(2.7)},
        "b": {"assigned": 1.0},
    }
    assert store.totals("rev:2") == {}


def test_state_and_locks(store: FeedbackStore) -> None:
    assert store.load_state("bandit:1") is None
    store.save_state("bandit:1", {"weights": {"a": 50.0}})
    assert store.load_state("bandit:1") == {"weights": {"a": 50.0}}
    assert store.try_lock("bandit:1", 30) is True
    assert store.try_lock("bandit:1", 30) is False
    assert store.try_lock("bandit:2", 30) is True


def test_namespaces_do_not_mix(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    one, two = open_store(url, "one"), open_store(url, "two")
    one.save_predictions([record("a")], ttl=60)
    assert two.predictions(["a"]) == {}


def test_expired_records_are_gone(store: FeedbackStore) -> None:
    store.save_predictions([record("old")], ttl=0.001)
    import time

    time.sleep(0.01)  # the record's own time-to-live, not an event
    assert store.predictions(["old"]) == {}


def test_a_redis_outage_is_a_clean_503_error(tmp_path: Path) -> None:
    server = RedisServer(free_port(), tmp_path).start()
    try:
        store = open_store(server.url, "ns")
        store.save_predictions([record("a")], ttl=60)
        server.stop()
        with pytest.raises(FeedbackStoreUnavailable, match="redis"):
            store.predictions(["a"])
        server.start()  # the same port again: the client reconnects
        assert store.predictions(["a"]) == {}  # memory-only Redis: gone, but reachable again
    finally:
        server.stop()


def test_state_url_is_checked_and_defaults_beside_a_local_registry(tmp_path: Path) -> None:
    with pytest.raises(InvalidSettings, match="ML_API_STATE_URL"):
        StoreHandle("postgres://x", "ns")
    with pytest.raises(InvalidSettings, match="absolute"):
        open_store("sqlite:///relative.db", "ns")
    url, shared = default_state_url(str(tmp_path / "registry"))
    assert (url, shared) == (f"sqlite:///{tmp_path / 'registry' / 'feedback.sqlite3'}", True)
    assert default_state_url("s3://bucket/models")[1] is False


def test_sqlite_deletes_expired_rows_through_an_index_and_not_on_every_flush(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.sqlite3"
    store = open_store(f"sqlite:///{path}", "ns")
    store.save_predictions([record("new")], ttl=60)  # the first flush purges...
    store.save_predictions([record("old")], ttl=-1)  # ...the next purge is a minute away
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM predictions").fetchone() == (2,)
        plan = " ".join(
            str(row[-1])
            for row in db.execute("EXPLAIN QUERY PLAN DELETE FROM predictions WHERE expires < 1")
        )
    # (a covering index once the table is clustered on its key); a scan would read millions
    assert "INDEX predictions_expires" in plan
    assert "SCAN" not in plan
    assert store.predictions(["old", "new"]).keys() == {"new"}  # expired: never served
