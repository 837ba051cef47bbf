"""What an upload leaves on record as it goes: its progress log, its events and its view.

Both protocols record through here: one ``upload_started`` and one ``upload_progress`` event
shape, one progress-log row, one :class:`~vidgate.uploads.models.SessionView` builder. Every
write takes the caller's transaction (``tx``), so a record commits with the change it tells of.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Connection, Table, insert, select
from sqlalchemy.orm import Session

from vidgate.config import Settings
from vidgate.db.engine import Database
from vidgate.db.models import SessionStatus, UploadChunk, UploadProgressLog, UploadSession, new_id
from vidgate.errors import SessionNotFound
from vidgate.events.publisher import EventPublisher
from vidgate.events.schema import UploadProgress, UploadProgressData, UploadStarted, UploadStartedData
from vidgate.uploads.layouts import layout_of, progress_percent
from vidgate.uploads.models import SessionView

_INSERT_LOG = insert(cast(Table, UploadProgressLog.__table__))  # built once
_SESSIONS = cast(Table, UploadSession.__table__)
_INSERT_SESSION = insert(_SESSIONS)
#: every column of a new session row that its maker does not give (the models' defaults)
_NEW_SESSION = {column.key: None for column in _SESSIONS.columns} | {
    "chunks_received": 0,
    "bytes_received": 0,
    "status": SessionStatus.ACTIVE,
    "upload_options": {},
    "priority": 5,
    "is_duplicate": False,
    "protocol": "chunks",
}
#: sessions whose data was deleted when they ended: their view comes from the row's counters
_ENDED_WITHOUT_DATA = frozenset({SessionStatus.FAILED, SessionStatus.CANCELLED, SessionStatus.EXPIRED})


#: a request moves its session's last change before its body streams only when the session has
#: been idle for this share of the session timeout: the sweep expires a session by its last
#: change, so it cannot end one under a streaming body; otherwise the request's check is a read
#: (no write lock on SQLite, nothing committed). tus PATCHes and seed chunks alike.
TOUCH_AFTER = 0.01


def insert_session(connection: Connection, **values: object) -> UploadSession:
    """Make an ``upload_session`` row with a statement built once (the ORM's add and flush cost
    several times the insert) and return it as a transient object: what the caller goes on
    reading. An upload id already taken raises ``IntegrityError``, as the flush did."""
    row = {**_NEW_SESSION, "id": new_id(), **values}
    connection.execute(_INSERT_SESSION, row)
    return UploadSession(**row)


def received(tx: Session, upload_id: str) -> set[int]:
    """Indexes of the chunks an upload holds."""
    return set(tx.scalars(select(UploadChunk.chunk_index).where(UploadChunk.session_id == upload_id)).all())


class Records:
    def __init__(self, settings: Settings, db: Database, events: EventPublisher | None) -> None:
        self.settings = settings
        self.db = db
        self.events = events

    def log(self, tx: Session, row: UploadSession, event_type: str, message: str | None) -> None:
        """A row of upload_progress_log, in the caller's transaction."""
        tx.add(
            UploadProgressLog(
                session_id=row.session_id,
                event_type=event_type,
                chunks_received=row.chunks_received or 0,
                bytes_received=row.bytes_received or 0,
                progress_percentage=progress_percent(row.chunks_received or 0, row.total_chunks),
                message=message,
            )
        )

    def log_now(
        self, connection: Connection, row: UploadSession, event_type: str, message: str | None, now: datetime
    ) -> None:
        """The same row as :meth:`log`, by a statement built once on the caller's connection."""
        connection.execute(
            _INSERT_LOG,
            {
                "id": new_id(),
                "session_id": row.session_id,
                "event_type": event_type,
                "chunks_received": row.chunks_received or 0,
                "bytes_received": row.bytes_received or 0,
                "progress_percentage": progress_percent(row.chunks_received or 0, row.total_chunks),
                "message": message,
                "details": {},
                "created_at": now,
            },
        )

    def started(
        self, tx: Session, user_id: str, upload_id: str, filename: str, total_chunks: int, file_size: int | None
    ) -> None:
        """``upload_started``, in the transaction that creates the upload."""
        if self.events is not None:
            data = UploadStartedData(filename=filename, total_chunks=total_chunks, file_size=file_size)
            self.events.to_user(UploadStarted(session_id=upload_id, data=data), user_id, tx)

    def progress(
        self,
        tx: Session,
        user_id: str,
        upload_id: str,
        *,
        chunks_received: int,
        total_chunks: int,
        bytes_received: int,
        percentage: float,
        final: bool,
    ) -> None:
        """``upload_progress``, at most every WEBSOCKET_PROGRESS_INTERVAL_SECONDS (always the final one)."""
        if self.events is None or not self.events.progress_due(f"upload:{upload_id}", final=final):
            return
        data = UploadProgressData(
            chunks_received=chunks_received,
            total_chunks=total_chunks,
            bytes_received=bytes_received,
            progress_percentage=percentage,
        )
        self.events.to_user(UploadProgress(session_id=upload_id, data=data), user_id, tx)

    def view(self, upload_id: str, owner: str | None = None) -> SessionView:
        """The session as clients see it; with ``owner``, another user's session is not found."""
        with self.db.session() as tx:
            row = tx.scalar(select(UploadSession).where(UploadSession.session_id == upload_id))
            if row is None or (owner is not None and row.user_id != owner):
                raise SessionNotFound(f"No upload session {upload_id!r}.")
            return to_view(row, received(tx, upload_id), self.settings.session_timeout)


def to_view(row: UploadSession, chunks: set[int], timeout: timedelta) -> SessionView:
    """The one view of a session, for either protocol (``chunks``: the indexes it holds).

    A failed, cancelled or expired session's chunks were deleted with its data: its counters
    then say what had arrived before it ended (chunks and bytes alike, as its end event and log
    row do), and nothing is missing since it takes no more chunks."""
    done = row.status is SessionStatus.COMPLETED
    ended = row.status in _ENDED_WITHOUT_DATA
    chunks_received = row.total_chunks if done else (row.chunks_received or 0) if ended else len(chunks)
    percentage = 100.0 if done else layout_of(row).percentage(row, chunks_received)
    return SessionView(
        session_id=row.session_id,
        upload_id=row.session_id,
        filename=row.filename,
        content_type=row.content_type,
        status=row.status,
        total_chunks=row.total_chunks,
        chunk_size=row.chunk_size,
        chunks_received=chunks_received,
        missing_chunks=[] if done or ended else [i for i in range(row.total_chunks) if i not in chunks],
        bytes_received=row.bytes_received,
        file_size=row.file_size,
        progress_percentage=percentage,
        priority=row.priority,
        file_hash=row.file_hash,
        content_hash=row.content_hash,
        video_id=row.video_id,
        duplicate=bool(row.is_duplicate),
        error_code=row.error_code,
        error_message=row.error_message,
        created_at=row.created_at,
        last_updated=row.last_updated,
        expires_at=row.last_updated + timeout,  # by the timeout in force, as the sweep decides
        completed_at=row.completed_at,
    )
