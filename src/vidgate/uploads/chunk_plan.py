"""Planning a seed chunk: check the request, create or find its session, decide where it goes.

The chunk goes straight to its offset in the part when the chunk size is known (or it is
chunk 0, which teaches it), to a staging slot when it is not yet, and nowhere when its index was
already received (then it is only hashed and compared).

A chunk of a session that exists is planned as a tus PATCH is checked: its lock first, then a
read (no write lock on SQLite, nothing committed), so no other request can record the same index
between the decision and the write. A transaction writes only to create the session, to keep a
``file_hash`` sent with a later chunk, or to move the last change of a session idle for
``TOUCH_AFTER`` of its timeout before the body streams.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
from datetime import timedelta
from typing import cast

from sqlalchemy import Table, bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vidgate.auth import Principal
from vidgate.db.models import SessionStatus, UploadChunk, UploadSession, utcnow
from vidgate.errors import (
    ChunkConflict,
    ChunkSizeMismatch,
    ChunkTooLarge,
    FileTooLarge,
    InvalidParameter,
    SessionNotActive,
    SessionNotFound,
    TotalChunksMismatch,
    VidgateError,
)
from vidgate.hashing import normalise_sha256
from vidgate.uploads.models import ChunkRequest
from vidgate.uploads.records import TOUCH_AFTER, Records, insert_session
from vidgate.uploads.remembered import Remembered
from vidgate.uploads.step import Step, UploadDeps
from vidgate.uploads.writing import WriteMode, WritePlan, first_bytes_check, safe_filename

log = logging.getLogger(__name__)

_SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
# Built once: building ORM statements per call costs more than running them (tus_store.py).
_SESSION_BY_UPLOAD_ID = (
    select(UploadSession).where(UploadSession.session_id == bindparam("upload_id")).with_for_update()
)
_CHUNK_AT = select(UploadChunk.chunk_size, UploadChunk.chunk_hash).where(
    UploadChunk.session_id == bindparam("upload_id"), UploadChunk.chunk_index == bindparam("index")
)
_SESSIONS = cast(Table, UploadSession.__table__)
_SESSION_AT = select(_SESSIONS).where(_SESSIONS.c.id == bindparam("row_id"))
_OWNER_OF = select(UploadSession.id, UploadSession.user_id).where(UploadSession.session_id == bindparam("upload_id"))


class ChunkPlanner(Step):
    def __init__(self, deps: UploadDeps, records: Records) -> None:
        super().__init__(deps)
        self.records = records
        #: session id -> (row id, owner): a row's id never changes, so none goes stale
        self._rows: Remembered[str, tuple[str, str]] = Remembered()

    def plan(self, principal: Principal, request: ChunkRequest) -> WritePlan:
        """Check the request against its session and the limits (creating the session if new);
        the returned plan holds the chunk's lock (else :class:`ChunkInProgress`)."""
        priority, file_hash = self._checked(request)
        plan = self._plan_by_reading(principal, request, file_hash)
        if plan is not None:
            return plan
        plan = self._plan_writing(principal, request, priority, file_hash)
        try:
            plan.locks.enter_context(self.locker.hold(plan.row_id, f"chunk-{plan.chunk_index}"))
        except BaseException:
            plan.close()
            raise
        return plan

    def _checked(self, request: ChunkRequest) -> tuple[int, str | None]:
        """The request's own checks, before any session is looked at: its priority and file hash."""
        priority = request.priority if request.priority is not None else self.settings.processing.default_priority
        self.limits.check_priority(priority)
        file_hash = None
        if request.file_hash:
            file_hash = normalise_sha256(request.file_hash)
            if file_hash is None:
                raise InvalidParameter("file_hash must be a SHA-256 in hex (64 characters, optionally 'sha256:...').")
        if request.session_id is not None and not _SESSION_ID.match(request.session_id):
            raise InvalidParameter(
                "session_id must be 1-128 characters of letters, digits, '_', '-', '.', ':' "
                "and start with a letter or digit."
            )
        for name in ("chunk_index", "total_chunks", "chunk_size", "file_size"):
            value = getattr(request, name)
            if value is not None and value < 0:
                raise InvalidParameter(f"{name} must not be negative, got {value}.")
        return priority, file_hash

    def _row_of(self, upload_id: str) -> tuple[str, str] | None:
        """The row id and owner of session ``upload_id``: remembered, or read once."""
        known = self._rows.get(upload_id)
        if known is not None:
            return known
        with self.db.reading() as tx:
            found = tx.execute(_OWNER_OF, {"upload_id": upload_id}).one_or_none()
        if found is None:
            return None
        self._rows.put(upload_id, (found.id, found.user_id))
        return found.id, found.user_id

    def _plan_by_reading(self, principal: Principal, request: ChunkRequest, file_hash: str | None) -> WritePlan | None:
        """A chunk of an existing session, planned under its lock by a read; None when planning
        must write (no such session yet, a ``file_hash`` to keep, an idle session to touch)."""
        if request.session_id is None:
            return None
        known = self._row_of(request.session_id)
        if known is not None and known[1] != principal.user_id:
            # remembered from a row an operator removed, its id since taken again? read once more
            self._rows.forget(request.session_id)
            known = self._row_of(request.session_id)
        if known is None:
            return None
        row_id, owner = known
        if owner != principal.user_id:
            raise SessionNotFound(f"No upload session {request.session_id!r}.")
        index = request.chunk_index if request.chunk_index is not None else 0
        locks = contextlib.ExitStack()
        locks.enter_context(self.locker.hold(row_id, f"chunk-{index}"))
        try:
            with self.db.reading() as tx:
                found = tx.connection().execute(_SESSION_AT, {"row_id": row_id}).one_or_none()
                if found is None or found.session_id != request.session_id:
                    locks.close()
                    return None  # purged since it was remembered: as a new session
                row = UploadSession(**found._mapping)  # detached: only read
                _check_against_session(row, request, file_hash)
                idle = utcnow() - row.last_updated > self.settings.session_timeout * TOUCH_AFTER
                if (file_hash is not None and row.file_hash is None) or (row.status is SessionStatus.ACTIVE and idle):
                    locks.close()
                    return None
                plan = self._choose_target(tx, row, request, touch=False)
                if plan.chunk_index == 0 and plan.mode is not WriteMode.VERIFY:
                    plan.head_check = first_bytes_check(row.filename, row.content_type)
        except BaseException:
            locks.close()
            raise
        plan.locks = locks
        plan.user_id = principal.user_id
        return plan

    def _plan_writing(
        self, principal: Principal, request: ChunkRequest, priority: int, file_hash: str | None
    ) -> WritePlan:
        for attempt in range(2):
            try:
                plan = self._plan(principal, request, priority, file_hash)
                plan.anonymous_new_session = plan.anonymous_new_session and request.session_id is None
                plan.user_id = principal.user_id
                if request.session_id is not None:  # committed: its next chunks are planned by reading
                    self._rows.put(plan.upload_id, (plan.row_id, principal.user_id))
                return plan
            except IntegrityError:
                # Two first chunks of a new session raced to create it: the second reads it now.
                if attempt == 1 or request.session_id is None:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _plan(self, principal: Principal, request: ChunkRequest, priority: int, file_hash: str | None) -> WritePlan:
        with self.db.session() as tx:
            row = None
            if request.session_id is not None:
                row = tx.scalar(_SESSION_BY_UPLOAD_ID, {"upload_id": request.session_id})
                if row is not None and row.user_id != principal.user_id:
                    raise SessionNotFound(f"No upload session {request.session_id!r}.")
            created = row is None
            if row is None:
                row = self._create_session(tx, principal, request, priority, file_hash)
            else:
                _check_against_session(row, request, file_hash)
                if file_hash is not None and row.file_hash is None:
                    row.file_hash = file_hash  # sent with a later chunk (clients hash while sending)
            plan = self._choose_target(tx, row, request, created=created)
            plan.anonymous_new_session = plan.created = created
            if created:
                self.records.started(
                    tx, principal.user_id, row.session_id, row.filename, row.total_chunks, row.file_size
                )
            if plan.chunk_index == 0 and plan.mode is not WriteMode.VERIFY:
                plan.head_check = first_bytes_check(row.filename, row.content_type)
            return plan

    def _choose_target(
        self, tx: Session, row: UploadSession, request: ChunkRequest, *, created: bool = False, touch: bool = True
    ) -> WritePlan:
        """Where this chunk's bytes go: its offset in the part, a staging slot, or nowhere. With
        ``touch``, an active session's last change moves to now (``tx`` writes it)."""
        index = request.chunk_index if request.chunk_index is not None else 0
        self.limits.check_chunk_index(index, row.total_chunks)

        existing = (
            None  # a session made by this request has no chunks yet
            if created
            else tx.connection().execute(_CHUNK_AT, {"upload_id": row.session_id, "index": index}).first()
        )
        if row.status is not SessionStatus.ACTIVE and not (row.status is SessionStatus.COMPLETED and existing):
            raise SessionNotActive(
                f"Upload session {row.session_id!r} is {row.status.value}; it takes no more chunks."
                + (f" ({row.error_message})" if row.error_message else "")
            )
        now = utcnow()
        if touch and row.status is SessionStatus.ACTIVE and not created:  # a new row has just had them set
            row.last_updated = now
            row.expires_at = now + timedelta(seconds=self.settings.session_timeout_seconds)

        def target(
            mode: WriteMode, offset: int, limit: int, *, reserve: int | None = None, existing_hash: str | None = None
        ) -> WritePlan:
            too_large: VidgateError
            if mode is WriteMode.VERIFY:
                too_large = ChunkConflict(f"Chunk {index} was already received with different bytes (it is longer).")
            elif row.total_chunks == 1:
                too_large = FileTooLarge(f"The file is larger than the limit of {limit} bytes.")
            else:
                too_large = ChunkTooLarge(f"Chunk {index} is larger than {limit} bytes.")
            return WritePlan(
                row_id=row.id,
                upload_id=row.session_id,
                chunk_index=index,
                total_chunks=row.total_chunks,
                mode=mode,
                offset=offset,
                limit=limit,
                too_large=too_large,
                reserve=reserve,
                existing_hash=existing_hash,
                # a single chunk's own hash is already the file's hash
                runs_file_hash=mode is WriteMode.DIRECT and row.total_chunks > 1,
                whole_file=mode is WriteMode.DIRECT and row.total_chunks == 1,
            )

        if existing is not None:
            return target(WriteMode.VERIFY, 0, existing.chunk_size, existing_hash=existing.chunk_hash)
        if row.total_chunks == 1:
            limit = row.file_size if row.file_size is not None else self.limits.max_file_size
            return target(WriteMode.DIRECT, 0, limit, reserve=row.file_size)
        if row.chunk_size is not None:
            offset = index * row.chunk_size
            limit = row.chunk_size
            if row.file_size is not None and index == row.total_chunks - 1:
                limit = row.file_size - offset
            return target(
                WriteMode.DIRECT,
                offset,
                min(limit, self.limits.max_file_size - offset),
                # the whole file when its size is known, so a full disk shows on the first chunk
                reserve=row.file_size if row.file_size is not None else offset + limit,
            )
        limit = min(self.limits.max_chunk_size, self.limits.max_file_size)
        if index == 0:
            # Chunk 0 teaches the chunk size; until then it is the only chunk in the part.
            return target(WriteMode.DIRECT, 0, limit)
        return target(WriteMode.STAGED, 0, limit)

    def _create_session(
        self, tx: Session, principal: Principal, request: ChunkRequest, priority: int, file_hash: str | None
    ) -> UploadSession:
        total = request.total_chunks if request.total_chunks is not None else 1
        self.limits.check_announced(total, request.chunk_size, request.file_size)
        if total > 1 and request.chunk_index is None:
            raise InvalidParameter("chunk_index is required when total_chunks is more than 1.")
        filename = safe_filename(self.settings, request.filename)
        now = utcnow()
        row = insert_session(
            tx.connection(),
            session_id=request.session_id or secrets.token_hex(16),
            filename=filename,
            content_type=(request.content_type or None) and request.content_type[:100],
            file_size=request.file_size,
            file_hash=file_hash,
            total_chunks=total,
            chunk_size=request.chunk_size if total > 1 else request.file_size,
            user_id=principal.user_id,
            username=principal.username,
            upload_options=request.options,
            priority=priority,
            status=SessionStatus.ACTIVE,
            created_at=now,
            last_updated=now,
            expires_at=now + timedelta(seconds=self.settings.session_timeout_seconds),
        )
        self.records.log_now(tx.connection(), row, "upload_started", "session created", now)
        log.info(
            "upload session %s created by %s (%d chunks)",
            row.session_id,
            principal.username,
            total,
            extra={"session_id": row.session_id, "event": "session_created", "user": principal.username},
        )
        return row


def _check_against_session(row: UploadSession, request: ChunkRequest, file_hash: str | None) -> None:
    if request.total_chunks is not None and request.total_chunks != row.total_chunks:
        raise TotalChunksMismatch(
            f"total_chunks is {request.total_chunks} but session {row.session_id!r} was started with "
            f"{row.total_chunks}."
        )
    if file_hash is not None and row.file_hash is not None and file_hash != row.file_hash:
        raise InvalidParameter(f"file_hash differs from the one session {row.session_id!r} was started with.")
    if request.chunk_size is not None and request.chunk_size != row.chunk_size and row.total_chunks > 1:
        raise ChunkSizeMismatch(
            f"chunk_size {request.chunk_size} differs from the session's "
            f"{row.chunk_size if row.chunk_size is not None else '(not announced with its first chunk)'}."
        )
    if request.file_size is not None and row.file_size is not None and request.file_size != row.file_size:
        raise InvalidParameter(f"file_size {request.file_size} differs from the session's {row.file_size}.")
