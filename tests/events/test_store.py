"""The event store's contract, on SQLite and PostgreSQL: each user's sequence is gapless and
rises with commit order under concurrent writers, a rolled-back change leaves no number and
publishes nothing, replay reads after N (of one subject, up to M), and the sweep keeps the
counters."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.conftest import database_url_for
from vidgate.db import migrate
from vidgate.db.engine import Database
from vidgate.db.models import StoredEvent, UserAccount, utcnow
from vidgate.events.publisher import EventPublisher
from vidgate.events.schema import AnyEvent, FailureData, UploadFailed
from vidgate.events.store import EventStore


class RecordingBus:
    """A bus that keeps what is published (in the order of publishing)."""

    def __init__(self) -> None:
        self.published: list[AnyEvent] = []
        self._lock = threading.Lock()

    def publish(self, event: AnyEvent) -> AnyEvent:
        with self._lock:
            self.published.append(event)
        return event

    async def listen(self, deliver: object, on_connect: object = None) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


@pytest.fixture
def db(backend: str, tmp_path: Path) -> Iterator[Database]:
    with database_url_for(backend, tmp_path) as url:
        database = Database(url)
        migrate.upgrade(database)
        with database.session() as session:
            session.add_all([UserAccount(id="u1", username="u1"), UserAccount(id="u2", username="u2")])
        try:
            yield database
        finally:
            database.dispose()


def failure(session_id: str, n: int = 0) -> UploadFailed:
    return UploadFailed(session_id=session_id, data=FailureData(error_code="x", message=str(n)))


def test_sequences_are_gapless_and_follow_commit_order_under_concurrent_writers(db: Database) -> None:
    bus = RecordingBus()
    publisher = EventPublisher(bus, db)
    writers, each = 8, 25

    def write(writer: int) -> None:
        for n in range(each):
            with db.session() as session:
                publisher.to_user(failure(f"s{writer}", n), "u1", session)
                if n % 5 == 0:
                    publisher.to_user(failure(f"s{writer}", n), "u2", session)

    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(write, range(writers)))
    with db.session() as session:
        rows = session.execute(select(StoredEvent.user_id, StoredEvent.sequence, StoredEvent.session_id)).all()
    mine = sorted(seq for user, seq, _ in rows if user == "u1")
    theirs = sorted(seq for user, seq, _ in rows if user == "u2")
    assert mine == list(range(1, writers * each + 1))
    assert theirs == list(range(1, writers * each // 5 + 1))
    # Each published once, after its commit (publishing order may differ from commit order: the
    # hub puts a number that comes early behind the ones before it, read from the store).
    assert sorted(e.sequence for e in bus.published if e.audience == ["u1"]) == mine
    assert sorted(e.sequence for e in bus.published if e.audience == ["u2"]) == theirs
    # Each writer's own events keep their order within the user's stream.
    for writer in range(writers):
        ordered = [seq for user, seq, sid in sorted(rows, key=lambda r: r[1]) if user == "u1" and sid == f"s{writer}"]
        assert ordered == sorted(ordered) and len(ordered) == each


def test_a_rolled_back_change_leaves_no_number_and_publishes_nothing(db: Database) -> None:
    bus = RecordingBus()
    publisher = EventPublisher(bus, db)
    with db.session() as session:
        publisher.to_user(failure("a"), "u1", session)
    with pytest.raises(RuntimeError), db.session() as session:
        publisher.to_user(failure("b"), "u1", session)
        raise RuntimeError("the change failed")
    with db.session() as session:
        publisher.to_user(failure("c"), "u1", session)
    store = EventStore(db)
    replayed = store.read("u1", 0)
    assert [(e.sequence, e.session_id) for e in replayed] == [(1, "a"), (2, "c")]
    assert [(e.sequence, e.session_id) for e in bus.published] == [(1, "a"), (2, "c")]


def test_replay_reads_after_n_of_one_subject_up_to_m(db: Database) -> None:
    publisher = EventPublisher(None, db)
    for n in range(10):
        with db.session() as session:
            publisher.to_user(failure("odd" if n % 2 else "even", n), "u1", session)
    store = EventStore(db)
    assert [e.sequence for e in store.read("u1", 6)] == [7, 8, 9, 10]
    assert [e.sequence for e in store.read("u1", 0, session_id="odd")] == [2, 4, 6, 8, 10]
    assert [e.sequence for e in store.read("u1", 3, upto=7, session_id="even")] == [5, 7]
    assert [e.sequence for e in store.read("u1", 0, limit=3)] == [1, 2, 3]
    replayed = store.read("u1", 9)[0]
    assert isinstance(replayed, UploadFailed) and replayed.data.message == "9" and replayed.audience == ["u1"]
    assert store.read("u2", 0) == []
    assert store.latest(["u1", "u2", "nobody"]) == {"u1": 10, "u2": 0, "nobody": 0}


def test_the_sweep_deletes_old_events_and_numbering_goes_on(db: Database) -> None:
    publisher = EventPublisher(None, db)
    store = EventStore(db)
    for n in range(3):
        with db.session() as session:
            publisher.to_user(failure("s", n), "u1", session)
    assert store.sweep(utcnow() - timedelta(hours=1)) == 0
    assert store.sweep(utcnow() + timedelta(seconds=1)) == 3
    with db.session() as session:
        publisher.to_user(failure("s", 3), "u1", session)
    assert [e.sequence for e in store.read("u1", 0)] == [4]
