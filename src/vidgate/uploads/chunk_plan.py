"""Planning a seed chunk: check the request, create or find its session, decide where it goes.

The chunk goes straight to its offset in the part when the chunk size is known (or it is
chunk 0, which teaches it), to a staging slot when it is not yet, and nowhere when its index was
already received (then it is only hashed and compared).
"""

from __future__ import annotations

import logging
import re
import secrets
from datetime import timedelta

from sqlalchemy import bindparam, select
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
from vidgate.uploads.records import Records, insert_session
from vidgate.uploads.step import Step, UploadDeps
from vidgate.uploads.writing import WriteMode, WritePlan, first_bytes_check, safe_filename

log = logging.getLogger(__name__)

_SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
# Built once: building ORM statements per call costs more than running them (tus_store.py).
_SESSION_BY_UPLOAD_ID = (
    select(UploadSession).where(UploadSession.session_id == bindparam("upload_id")).with_for_update()
)
_CHUNK_AT = select(UploadChunk).where(
    UploadChunk.session_id == bindparam("upload_id"), UploadChunk.chunk_index == bindparam("index")
)


class ChunkPlanner(Step):
    def __init__(self, deps: UploadDeps, records: Records) -> None:
        super().__init__(deps)
        self.records = records

    def plan(self, principal: Principal, request: ChunkRequest) -> WritePlan:
        """Check the request against its session and the limits; create the session if new."""
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

        for attempt in range(2):
            try:
                plan = self._plan(principal, request, priority, file_hash)
                plan.anonymous_new_session = plan.anonymous_new_session and request.session_id is None
                plan.user_id = principal.user_id
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
        self, tx: Session, row: UploadSession, request: ChunkRequest, *, created: bool = False
    ) -> WritePlan:
        """Where this chunk's bytes go: its offset in the part, a staging slot, or nowhere."""
        index = request.chunk_index if request.chunk_index is not None else 0
        self.limits.check_chunk_index(index, row.total_chunks)

        existing = (
            None  # a session made by this request has no chunks yet
            if created
            else tx.scalar(_CHUNK_AT, {"upload_id": row.session_id, "index": index})
        )
        if row.status is not SessionStatus.ACTIVE and not (row.status is SessionStatus.COMPLETED and existing):
            raise SessionNotActive(
                f"Upload session {row.session_id!r} is {row.status.value}; it takes no more chunks."
                + (f" ({row.error_message})" if row.error_message else "")
            )
        now = utcnow()
        if row.status is SessionStatus.ACTIVE and not created:  # a new row has just had them set
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
