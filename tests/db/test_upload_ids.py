"""SessionUploadIds: an upload's multipart UploadId recorded once on its session row."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import database_url_for
from tests.helpers import active_session_row
from vidgate.db import migrate
from vidgate.db.engine import Database
from vidgate.db.upload_ids import SessionUploadIds
from vidgate.errors import SessionNotFound


@pytest.fixture
def db(tmp_path: Path, backend: str) -> Iterator[Database]:
    with database_url_for(backend, tmp_path) as url:
        database = Database(url)
        migrate.upgrade(database)
        yield database
        database.dispose()


def test_the_first_claim_wins(db: Database) -> None:
    ids = SessionUploadIds(db)
    key = active_session_row(db)
    assert ids.get(key) is None
    assert ids.claim(key, "first") == "first"
    assert ids.claim(key, "second") == "first"
    assert ids.get(key) == "first"
    ids.forget(key)
    assert ids.get(key) is None
    assert ids.claim(key, "third") == "third"


def test_racing_claims_agree(db: Database) -> None:
    ids = SessionUploadIds(db)
    key = active_session_row(db)
    answers: list[str] = []
    barrier = threading.Barrier(4)

    def claim(name: str) -> None:
        barrier.wait()
        answers.append(ids.claim(key, name))

    threads = [threading.Thread(target=claim, args=(f"id-{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 4 and len(set(answers)) == 1


def test_no_row_no_claim(db: Database) -> None:
    with pytest.raises(SessionNotFound):
        SessionUploadIds(db).claim("no-such-row", "x")
