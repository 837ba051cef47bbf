"""The tus store: what tus reads and writes of an upload, with the statements built once.

A tus upload is an ``upload_session`` row with ``protocol = "tus"``. A PATCH runs a handful of
statements on every call; they are built here once, and executed on the caller's connection.
:class:`TusStore` also remembers which row an upload id names (a PATCH then goes straight to
its locked transaction) and builds what HEAD reports.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol, cast

from sqlalchemy import Connection, Row, Table, bindparam, insert, select, update

from vidgate.auth import Principal
from vidgate.db.models import SessionStatus, UploadChunk, UploadProgressLog, UploadSession, new_id, utcnow
from vidgate.errors import SessionNotFound, UploadGone
from vidgate.uploads.completion import Completion
from vidgate.uploads.layouts import progress_percent
from vidgate.uploads.models import TusUpload
from vidgate.uploads.remembered import Remembered
from vidgate.uploads.step import Step, UploadDeps

_GONE = (SessionStatus.FAILED, SessionStatus.CANCELLED, SessionStatus.EXPIRED)

# What a PATCH runs on every call, built once: building SQLAlchemy statements per call cost
# more than running them.
_SESSIONS = cast(Table, UploadSession.__table__)
_ADVANCE = (
    update(_SESSIONS)
    .where(
        _SESSIONS.c.id == bindparam("row_id"),
        _SESSIONS.c.status == SessionStatus.ACTIVE,
        _SESSIONS.c.bytes_received == bindparam("offset"),
    )
    .values(
        chunks_received=_SESSIONS.c.chunks_received + bindparam("added"),
        total_chunks=_SESSIONS.c.chunks_received + bindparam("added"),
        bytes_received=_SESSIONS.c.bytes_received + bindparam("size"),
        last_updated=bindparam("now"),
    )
    .returning(
        *(
            _SESSIONS.c[name]
            for name in (
                "session_id",
                "user_id",
                "chunks_received",
                "bytes_received",
                "file_size",
                "upload_metadata",
                "last_updated",
                "concat",
                "concat_parts",
                "status",
                "video_id",
                "is_duplicate",
                "content_hash",
                # what assembly needs, when this PATCH completes the upload
                "filename",
                "content_type",
                "file_hash",
            )
        )
    )
)
_PATCH_TARGET = (
    select(
        *(
            _SESSIONS.c[name]
            for name in (
                "status",
                "error_message",
                "last_updated",
                "concat",
                "bytes_received",
                "file_size",
                "filename",
                "content_type",
            )
        )
    )
    .where(_SESSIONS.c.id == bindparam("row_id"))
    .with_for_update()
)
_TOUCH = (
    update(_SESSIONS)
    .where(_SESSIONS.c.id == bindparam("row_id"), _SESSIONS.c.status == SessionStatus.ACTIVE)
    .values(file_size=bindparam("file_size"), last_updated=bindparam("now"), expires_at=bindparam("expires_at"))
)
_MARK_ASSEMBLING = (
    update(_SESSIONS)
    .where(_SESSIONS.c.id == bindparam("row_id"))
    .values(status=SessionStatus.ASSEMBLING, content_hash=bindparam("content_hash"))
)
_INSERT_CHUNK = insert(cast(Table, UploadChunk.__table__))
_INSERT_PROGRESS = insert(cast(Table, UploadProgressLog.__table__))


def patch_target(connection: Connection, row_id: str) -> Row[Any] | None:
    """What a PATCH checks of its upload, the row locked for the PATCH's transaction."""
    return connection.execute(_PATCH_TARGET, {"row_id": row_id}).one_or_none()


def touch(connection: Connection, row_id: str, file_size: int | None, now: datetime, expires_at: datetime) -> None:
    connection.execute(_TOUCH, {"row_id": row_id, "file_size": file_size, "now": now, "expires_at": expires_at})


def advance(connection: Connection, row_id: str, offset: int, size: int, now: datetime) -> Row[Any] | None:
    """Move the upload from ``offset`` by ``size`` bytes if it is still active and still there;
    the upload after it, or None when it was not (nothing changed)."""
    return connection.execute(
        _ADVANCE, {"row_id": row_id, "offset": offset, "size": size, "added": int(size > 0), "now": now}
    ).one_or_none()


def add_chunk(
    connection: Connection, upload_id: str, index: int, size: int, location: str, chunk_hash: str | None, now: datetime
) -> None:
    """The chunk row of one PATCH's bytes."""
    connection.execute(
        _INSERT_CHUNK,
        {
            "id": new_id(),
            "session_id": upload_id,
            "chunk_index": index,
            "chunk_size": size,
            "chunk_hash": chunk_hash,
            "storage_path": location,
            "received": True,
            "verified": True,
            "received_at": now,
            "verified_at": now,
        },
    )


def mark_assembling(connection: Connection, row_id: str, content_hash: str | None) -> None:
    """Every byte is in: the upload is assembling, with its file's SHA-256 when the running hash
    has it already (committed before its ``put_file``, as deletion needs; else assembly does it)."""
    connection.execute(_MARK_ASSEMBLING, {"row_id": row_id, "content_hash": content_hash})


def log_progress(connection: Connection, upload: Row[Any], message: str, now: datetime) -> None:
    """The progress-log row of one PATCH (as :meth:`vidgate.uploads.records.Records.log`, by bytes)."""
    connection.execute(
        _INSERT_PROGRESS,
        {
            "id": new_id(),
            "session_id": upload.session_id,
            "event_type": "upload_progress",
            "chunks_received": upload.chunks_received,
            "bytes_received": upload.bytes_received,
            "progress_percentage": progress_percent(upload.bytes_received, upload.file_size),
            "message": message,
            "details": {},
            "created_at": now,
        },
    )


class Identity(NamedTuple):
    """What never changes about a tus upload once created: enough to lock it and check its owner."""

    row_id: str
    user_id: str
    concat: str | None


class TusStore(Step):
    def __init__(self, deps: UploadDeps, completion: Completion, max_remembered: int = 10_000) -> None:
        super().__init__(deps)
        self.completion = completion
        # upload id -> identity, so a PATCH goes straight to its locked transaction instead of
        # first reading the row to learn which lock to take (one transaction less per PATCH)
        self._identities: Remembered[str, Identity] = Remembered(max_remembered)

    def row(self, principal: Principal, upload_id: str) -> UploadSession:
        """The tus upload ``upload_id`` of ``principal`` (detached), or SessionNotFound."""
        with self.db.session() as tx:
            row = tx.scalar(select(UploadSession).where(UploadSession.session_id == upload_id))
            if row is None or row.user_id != principal.user_id or row.protocol != "tus":
                raise SessionNotFound(f"No upload {upload_id!r}.")
            tx.expunge(row)
        self.remember(upload_id, Identity(row.id, row.user_id, row.concat))
        return row

    def remember(self, upload_id: str, identity: Identity) -> None:
        self._identities.put(upload_id, identity)

    def identity(self, principal: Principal, upload_id: str) -> Identity:
        """Who owns ``upload_id`` and which row it is: remembered, or read once."""
        identity = self._identities.get(upload_id)
        if identity is None:
            row = self.row(principal, upload_id)
            identity = Identity(row.id, row.user_id, row.concat)
        if identity.user_id != principal.user_id:
            raise SessionNotFound(f"No upload {upload_id!r}.")
        return identity

    def get(self, principal: Principal, upload_id: str) -> TusUpload:
        """The upload as HEAD reports it; 410 once it expired, was terminated or refused."""
        row = self.row(principal, upload_id)
        check_alive(row, self.settings.session_timeout)
        return to_upload(row, self.settings.session_timeout)

    def complete(self, row_id: str) -> None:
        """Every byte is in: assemble the upload (an empty one too, which validation refuses)."""
        with self.db.session() as tx:
            row = tx.get_one(UploadSession, row_id)
            if row.status is SessionStatus.ACTIVE:
                row.status = SessionStatus.ASSEMBLING
        if not self.parts.exists(row_id):
            self.parts.create_empty(row_id)
        self.completion.assemble(row_id)


class _Liveness(Protocol):
    status: SessionStatus
    error_message: str | None
    last_updated: datetime


def check_alive(row: _Liveness, timeout: timedelta) -> None:
    """Gone when ended, or idle past the session timeout in force (before the sweep expires it)."""
    if row.status in _GONE:
        reason = f" ({row.error_message})" if row.error_message else ""
        raise UploadGone(f"The upload is {row.status.value}{reason}.")
    if row.status is SessionStatus.ACTIVE and row.last_updated + timeout < utcnow():
        raise UploadGone("The upload expired.")


class _UploadFields(Protocol):
    """What HEAD reports, from a loaded row or from the columns a PATCH's UPDATE returned."""

    session_id: str
    bytes_received: int
    file_size: int | None
    upload_metadata: str | None
    last_updated: datetime
    concat: str | None
    concat_parts: list[str] | None
    status: SessionStatus
    video_id: str | None
    is_duplicate: bool
    content_hash: str | None


def to_upload(row: _UploadFields, timeout: timedelta, *, status: SessionStatus | None = None) -> TusUpload:
    """``expires_at`` (``Upload-Expires``) by the session timeout in force, as the sweep decides."""
    return TusUpload(
        upload_id=row.session_id,
        offset=row.bytes_received,
        length=row.file_size,
        metadata=row.upload_metadata,
        expires_at=row.last_updated + timeout,
        concat=row.concat,
        concat_parts=list(row.concat_parts or []),
        status=status or row.status,
        video_id=row.video_id,
        duplicate=bool(row.is_duplicate),
        content_hash=row.content_hash,
    )
