"""Who owns a video, as serving its bytes asks it: in a thread (served_video) and on the event
loop (served_video_now, SQLite only), on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, insert

from tests.conftest import database_url_for
from vidgate.db import migrate
from vidgate.db.engine import Database
from vidgate.db.models import Content, Video, VideoStatus
from vidgate.library.owners import WouldWait, served_video, served_video_now


@pytest.fixture
def db(backend: str, tmp_path: Path) -> Iterator[Database]:
    with database_url_for(backend, tmp_path) as url:
        database = Database(url)
        migrate.upgrade(database)
        try:
            yield database
        finally:
            database.dispose()


def add_video(db: Database, owner: str) -> tuple[str, str]:
    content_id, video_id = str(uuid.uuid4()), str(uuid.uuid4())
    digest = uuid.uuid4().hex * 2
    with db.session() as session:
        session.execute(
            insert(Content),
            [
                dict(
                    id=content_id,
                    content_hash=digest,
                    file_size=1234,
                    storage_key=digest,
                    media_info={"container": "webm", "streams": [{"codec": "vp9"}]},
                )
            ],
        )
        session.execute(
            insert(Video),
            [dict(id=video_id, user_id=owner, content_id=content_id, filename="a.webm", status=VideoStatus.COMPLETED)],
        )
    return video_id, digest


def test_both_lookups_agree_and_see_a_delete_at_once(db: Database, backend: str) -> None:
    video_id, digest = add_video(db, "alice")
    found = served_video(db, video_id, "alice")
    assert found is not None and found.container == "webm" and found.file_size == 1234
    assert found.content_hash == digest and found.status is VideoStatus.COMPLETED
    assert served_video(db, video_id, "bob") is None
    assert served_video(db, video_id, None) == found  # whoever owns it (a signed URL's check)
    if backend == "postgresql":
        with pytest.raises(WouldWait):  # a network round trip: never on the event loop
            served_video_now(db, video_id, "alice")
        return
    assert served_video_now(db, video_id, "alice") == found
    assert served_video_now(db, video_id, None) == found
    assert served_video_now(db, video_id, "bob") is None
    with db.session() as session:  # another connection deletes it: the next read must not see it
        session.execute(delete(Video).where(Video.id == video_id))
    assert served_video_now(db, video_id, "alice") is None
    assert served_video(db, video_id, "alice") is None


def test_on_sqlite_the_loop_lookup_never_waits_for_a_lock(db: Database, backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("SQLite's locks")
    video_id, _ = add_video(db, "alice")
    assert served_video_now(db, video_id, "alice") is not None
    path = db.engine.url.database
    assert path is not None
    db.dispose()  # the pool's and the loop's connections closed (opened again when next used)
    holder = sqlite3.connect(path, isolation_level=None)
    try:  # a connection that keeps every other out, readers too
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("UPDATE video SET filename = 'b.webm'")
        started = time.monotonic()
        with pytest.raises(WouldWait):
            served_video_now(db, video_id, "alice")
        assert time.monotonic() - started < 1.0  # at once, not after the 30 s busy timeout
        holder.execute("COMMIT")
    finally:
        holder.close()
    again = served_video_now(db, video_id, "alice")
    assert again is not None and again.filename == "b.webm"
