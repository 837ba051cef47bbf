"""Planning a seed chunk: a chunk of an existing session is planned under its lock by a read;
a transaction writes only to create the session, keep a late file_hash or touch an idle one."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, update

from tests.helpers import finishes_at_once, sha256, split, sqlite_write_lock_held
from tests.uploads.test_chunked import ALICE, CHUNK, send
from vidgate.auth import Principal
from vidgate.db.models import UploadSession
from vidgate.errors import ChunkInProgress, SessionNotFound
from vidgate.uploads.chunked import ChunkedUploads
from vidgate.uploads.models import ChunkRequest
from vidgate.uploads.records import TOUCH_AFTER
from vidgate.uploads.writing import WriteMode

MALLORY = Principal(user_id="u-mallory", username="mallory")


def _session(services: Any, session_id: str) -> UploadSession:
    with services.db.session() as tx:
        row = tx.scalar(select(UploadSession).where(UploadSession.session_id == session_id))
        assert row is not None
        tx.expunge(row)
        return row


@contextlib.contextmanager
def _writes(db: Any) -> Iterator[list[str]]:
    """The INSERT/UPDATE/DELETE statements run on ``db`` inside the block."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().split(" ", 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def _request(index: int, total: int, **fields: Any) -> ChunkRequest:
    return ChunkRequest(filename="clip.mp4", session_id="plan", total_chunks=total, chunk_index=index, **fields)


def test_a_chunk_of_an_existing_session_is_planned_by_a_read(
    services_for: Callable[..., Any], video_file: Path
) -> None:
    chunks = split(video_file.read_bytes(), CHUNK)
    with services_for() as services:
        uploads: ChunkedUploads = services.uploads
        send(uploads, chunks[0], session_id="plan", total_chunks=len(chunks), chunk_index=0)
        before = _session(services, "plan")
        with _writes(services.db) as written:
            plan = uploads.begin_chunk(ALICE, _request(1, len(chunks)))
        assert written == [] and (plan.mode, plan.offset) == (WriteMode.DIRECT, CHUNK)
        uploads.abort_chunk(plan)
        assert _session(services, "plan").last_updated == before.last_updated
        if services.db.engine.dialect.name == "sqlite":  # and it waits for no writer
            with sqlite_write_lock_held(services.db):
                plan = finishes_at_once(lambda: uploads.begin_chunk(ALICE, _request(2, len(chunks))))
            uploads.abort_chunk(plan)
        with pytest.raises(SessionNotFound):  # another owner's session id is still nobody's
            uploads.begin_chunk(MALLORY, _request(1, len(chunks)))
        for index in range(1, len(chunks)):
            receipt = send(uploads, chunks[index], session_id="plan", total_chunks=len(chunks), chunk_index=index)
        assert receipt.content_hash == sha256(b"".join(chunks))


def test_the_chunks_lock_is_taken_before_its_session_is_read(
    services_for: Callable[..., Any], video_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """So no request records the same index between the plan's decision and its write: a
    second request for an index in flight is refused, and one after the record only verifies."""
    chunks = split(video_file.read_bytes(), CHUNK)
    with services_for() as services:
        uploads: ChunkedUploads = services.uploads
        total = len(chunks)
        send(uploads, chunks[0], session_id="plan", total_chunks=total, chunk_index=0)
        order: list[str] = []
        hold = uploads.planner.locker.hold

        def holding(row_id: str, name: str) -> Any:
            order.append(f"lock {name}")
            return hold(row_id, name)

        def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if "upload_chunk" in statement and statement.lstrip().upper().startswith("SELECT"):
                order.append("read chunk")

        monkeypatch.setattr(uploads.planner.locker, "hold", holding)
        event.listen(services.db.engine, "before_cursor_execute", record)
        try:
            plan = uploads.begin_chunk(ALICE, _request(1, total))
        finally:
            event.remove(services.db.engine, "before_cursor_execute", record)
        assert order == ["lock chunk-1", "read chunk"]
        with pytest.raises(ChunkInProgress):
            uploads.begin_chunk(ALICE, _request(1, total))
        uploads.abort_chunk(plan)
        send(uploads, chunks[1], session_id="plan", total_chunks=total, chunk_index=1)
        plan = uploads.begin_chunk(ALICE, _request(1, total))
        assert plan.mode is WriteMode.VERIFY
        uploads.abort_chunk(plan)


def test_planning_writes_for_a_late_file_hash_and_an_idle_session(
    services_for: Callable[..., Any], video_file: Path
) -> None:
    """A file_hash sent with a later chunk is kept, and a session idle for TOUCH_AFTER of its
    timeout has its last change moved before the body streams (the sweep, which expires a
    session by its last change, cannot end it under the chunk)."""
    data = video_file.read_bytes()
    chunks = split(data, CHUNK)
    total = len(chunks)
    with services_for() as services:
        uploads: ChunkedUploads = services.uploads
        send(uploads, chunks[0], session_id="plan", total_chunks=total, chunk_index=0)
        plan = uploads.begin_chunk(ALICE, _request(1, total, file_hash=sha256(data)))
        uploads.abort_chunk(plan)
        assert _session(services, "plan").file_hash == sha256(data)

        created = _session(services, "plan").last_updated
        idle = services.settings.session_timeout * (TOUCH_AFTER * 2)
        with services.db.session() as tx:
            tx.execute(
                update(UploadSession).where(UploadSession.session_id == "plan").values(last_updated=created - idle)
            )
        plan = uploads.begin_chunk(ALICE, _request(1, total))
        assert _session(services, "plan").last_updated > created  # moved before any byte is recorded
        uploads.abort_chunk(plan)
