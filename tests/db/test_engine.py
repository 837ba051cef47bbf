"""Sessions: on SQLite a writing transaction takes the write lock at its start (so it never
fails half-way), and a reading one takes none (so frequent reads never queue behind writers)."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import select, text

from vidgate.db import migrate
from vidgate.db.engine import Database
from vidgate.db.models import UserAccount


def test_a_reader_reads_beside_a_writer_that_holds_the_lock_and_a_writer_waits(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/lock.db")
    migrate.upgrade(db)
    with db.session() as tx:
        tx.add(UserAccount(id="u1", username="before"))
    holding, release = threading.Event(), threading.Event()

    def writer() -> None:
        with db.session() as tx:
            tx.execute(text("UPDATE user_account SET username = 'after' WHERE id = 'u1'"))
            holding.set()
            release.wait(10)

    def second_writer(done: threading.Event) -> None:
        with db.session() as tx:
            tx.execute(text("SELECT 1"))
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert holding.wait(10)
        read: list[str] = []
        reader = threading.Thread(target=lambda: read.append(_name(db)))
        reader.start()
        reader.join(5)
        assert read == ["before"]  # a snapshot from before the uncommitted write, at once
        written = threading.Event()
        blocked = threading.Thread(target=second_writer, args=(written,))
        blocked.start()
        assert not written.wait(0.5)  # BEGIN IMMEDIATE waits for the lock
    finally:
        release.set()
        thread.join(10)
    blocked.join(10)
    assert written.is_set()
    assert _name(db) == "after"
    db.dispose()


def _name(db: Database) -> str:
    with db.reading() as tx:
        return str(tx.scalar(select(UserAccount.username).where(UserAccount.id == "u1")))
