"""Upload sessions: receive chunks at their offsets, resume, assemble, cancel and expire.

A chunk goes through three steps: :meth:`UploadService.begin_chunk` (checks the request
against the session and the limits, locks the chunk, opens the part file),
:meth:`UploadService.open_sink` (the caller streams the bytes into it) and
:meth:`UploadService.finish_chunk` (records the chunk; the last one assembles the file).
:meth:`UploadService.abort_chunk` undoes a chunk that broke off: it leaves no row, so the
chunk simply counts as missing and the client sends it again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vidgate import dedup, metrics
from vidgate.auth import Principal
from vidgate.config import Settings
from vidgate.db.engine import Database
from vidgate.db.models import (
    TERMINAL_STATUSES,
    AnalysisStatus,
    Content,
    SessionStatus,
    UploadChunk,
    UploadProgressLog,
    UploadSession,
    Video,
    VideoStatus,
    utcnow,
)
from vidgate.errors import (
    ChunkConflict,
    ChunkSizeMismatch,
    ChunkTooLarge,
    EmptyChunk,
    FileHashMismatch,
    FileTooLarge,
    InvalidParameter,
    SessionNotActive,
    SessionNotFound,
    TotalChunksMismatch,
    VidgateError,
)
from vidgate.events.publisher import EventPublisher
from vidgate.events.schema import (
    DuplicateDetected,
    DuplicateDetectedData,
    FailureData,
    SessionExpired,
    SessionExpiredData,
    UploadCompleted,
    UploadCompletedData,
    UploadFailed,
    UploadProgress,
    UploadProgressData,
    UploadStarted,
    UploadStartedData,
)
from vidgate.hashing import new_sha256, normalise_sha256, update_from_fd
from vidgate.storage import BlobStore, PartStore, translate_os_error
from vidgate.uploads.frontier import HashFrontier
from vidgate.uploads.locks import Locker
from vidgate.uploads.models import ChunkReceipt, ChunkRequest, CleanupReport, SessionView
from vidgate.uploads.writer import ChunkSink, SinkResult
from vidgate.validation import UploadLimits, sanitize_filename
from vidgate.validation.formats import HEAD_BYTES, check_head
from vidgate.validation.pipeline import FileValidator

log = logging.getLogger(__name__)

_SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
ORPHAN_GRACE_SECONDS = 300.0


class WriteMode(StrEnum):
    DIRECT = "direct"  # straight into the part file at the chunk's offset
    STAGED = "staged"  # offset unknown yet (chunk size not learnt): a staging file, placed at assembly
    VERIFY = "verify"  # index already received: hash only and compare


@dataclass
class ChunkPlan:
    """Everything decided before a chunk's bytes are read."""

    upload_id: str
    session_id: str
    chunk_index: int
    total_chunks: int
    mode: WriteMode
    offset: int
    limit: int
    path: Path
    fd: int | None = None
    #: bytes of disk to reserve in the part file up front (the whole file when its size is known)
    reserve: int | None = None
    existing_hash: str | None = None
    frontier_hasher: Any | None = None
    head_check: Callable[[bytes], None] | None = None
    #: the session was made by this request under a server-chosen id nobody else knows yet:
    #: if the request fails, nobody can resume it, so it is failed and deleted at once
    anonymous_new_session: bool = False
    created: bool = False  # this request created the session
    user_id: str = ""  # the owner, who gets this chunk's progress event
    locks: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.locks.close()


class UploadService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        parts: PartStore,
        blobs: BlobStore,
        locker: Locker,
        validator: FileValidator,
        frontier: HashFrontier | None = None,
        on_video_queued: Callable[[str], object] | None = None,
        events: EventPublisher | None = None,
    ) -> None:
        self.events = events
        self.settings = settings
        self.validator = validator
        #: called after commit with the id of a video that needs processing
        self.on_video_queued = on_video_queued
        self.db = db
        self.parts = parts
        self.blobs = blobs
        self.locker = locker
        self.frontier = frontier or HashFrontier()
        self.limits = UploadLimits.from_settings(settings)

    # ------------------------------------------------------------------ begin
    def begin_chunk(self, principal: Principal, request: ChunkRequest) -> ChunkPlan:
        """Check the request, create or find its session, lock the chunk and open its target."""
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
                break
            except IntegrityError:
                # Two first chunks of a new session raced to create it: the second reads it now.
                if attempt == 1 or request.session_id is None:
                    raise
        try:
            plan.locks.enter_context(self.locker.hold(plan.upload_id, f"chunk-{plan.chunk_index}"))
            if plan.mode is WriteMode.DIRECT:
                plan.fd = self.parts.open_part(plan.upload_id, reserve=plan.reserve)
                if plan.total_chunks > 1:  # a single chunk's own hash is already the file's hash
                    plan.frontier_hasher = self.frontier.claim(plan.upload_id, plan.offset)
            elif plan.mode is WriteMode.STAGED:
                try:
                    plan.fd = os.open(plan.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
                except OSError as exc:
                    raise translate_os_error(exc) from exc
        except BaseException:
            plan.close()
            raise
        return plan

    def _plan(self, principal: Principal, request: ChunkRequest, priority: int, file_hash: str | None) -> ChunkPlan:
        with self.db.session() as session:
            row = None
            if request.session_id is not None:
                row = session.scalar(
                    select(UploadSession).where(UploadSession.session_id == request.session_id).with_for_update()
                )
                if row is not None and row.user_id != principal.user_id:
                    raise SessionNotFound(f"No upload session {request.session_id!r}.")
            created = row is None
            if row is None:
                row = self._create_session(session, principal, request, priority, file_hash)
            else:
                self._check_against_session(row, request, file_hash)
                if file_hash is not None and row.file_hash is None:
                    row.file_hash = file_hash  # sent with a later chunk (clients hash while sending)
            plan = self._choose_target(session, row, request)
            plan.anonymous_new_session = plan.created = created
            if created and self.events is not None:
                self.events.to_user(
                    UploadStarted(
                        session_id=row.session_id,
                        data=UploadStartedData(
                            filename=row.filename, total_chunks=row.total_chunks, file_size=row.file_size
                        ),
                    ),
                    principal.user_id,
                    session,
                )
            if plan.chunk_index == 0 and plan.mode is not WriteMode.VERIFY:
                extension = row.filename.rpartition(".")[2].lower()
                plan.head_check = partial(check_first_bytes, extension=extension, content_type=row.content_type)
            return plan

    def _choose_target(self, session: Session, row: UploadSession, request: ChunkRequest) -> ChunkPlan:
        """Where this chunk's bytes go: its offset in the part file, a staging file, or nowhere."""
        settings = self.settings
        index = request.chunk_index if request.chunk_index is not None else 0
        self.limits.check_chunk_index(index, row.total_chunks)

        existing = session.scalar(
            select(UploadChunk).where(UploadChunk.session_id == row.session_id, UploadChunk.chunk_index == index)
        )
        if row.status is not SessionStatus.ACTIVE and not (row.status is SessionStatus.COMPLETED and existing):
            raise SessionNotActive(
                f"Upload session {row.session_id!r} is {row.status.value}; it takes no more chunks."
                + (f" ({row.error_message})" if row.error_message else "")
            )
        now = utcnow()
        if row.status is SessionStatus.ACTIVE:
            row.last_updated = now
            row.expires_at = now + timedelta(seconds=settings.session_timeout_seconds)

        part_path = self.parts.part_path(row.id)
        if existing is not None:
            return ChunkPlan(
                upload_id=row.id,
                session_id=row.session_id,
                chunk_index=index,
                total_chunks=row.total_chunks,
                mode=WriteMode.VERIFY,
                offset=0,
                limit=existing.chunk_size,
                path=part_path,
                existing_hash=existing.chunk_hash,
            )
        if row.total_chunks == 1:
            limit = row.file_size if row.file_size is not None else self.limits.max_file_size
            return ChunkPlan(
                upload_id=row.id,
                session_id=row.session_id,
                chunk_index=0,
                total_chunks=1,
                mode=WriteMode.DIRECT,
                offset=0,
                limit=limit,
                path=part_path,
                reserve=row.file_size,
            )
        if row.chunk_size is not None:
            offset = index * row.chunk_size
            limit = row.chunk_size
            if row.file_size is not None and index == row.total_chunks - 1:
                limit = row.file_size - offset
            return ChunkPlan(
                upload_id=row.id,
                session_id=row.session_id,
                chunk_index=index,
                total_chunks=row.total_chunks,
                mode=WriteMode.DIRECT,
                offset=offset,
                limit=min(limit, self.limits.max_file_size - offset),
                path=part_path,
                # the whole file when its size is known, so a full disk shows on the first chunk
                reserve=row.file_size if row.file_size is not None else offset + limit,
            )
        limit = min(self.limits.max_chunk_size, self.limits.max_file_size)
        if index == 0:
            # Chunk 0 teaches the chunk size; until then it is the only chunk in the part file.
            return ChunkPlan(
                upload_id=row.id,
                session_id=row.session_id,
                chunk_index=0,
                total_chunks=row.total_chunks,
                mode=WriteMode.DIRECT,
                offset=0,
                limit=limit,
                path=part_path,
            )
        return ChunkPlan(
            upload_id=row.id,
            session_id=row.session_id,
            chunk_index=index,
            total_chunks=row.total_chunks,
            mode=WriteMode.STAGED,
            offset=0,
            limit=limit,
            path=self.parts.staging_path(row.id, f"{index}.chunk"),
        )

    def _create_session(
        self, session: Session, principal: Principal, request: ChunkRequest, priority: int, file_hash: str | None
    ) -> UploadSession:
        total = request.total_chunks if request.total_chunks is not None else 1
        self.limits.check_announced(total, request.chunk_size, request.file_size)
        if total > 1 and request.chunk_index is None:
            raise InvalidParameter("chunk_index is required when total_chunks is more than 1.")
        safe = sanitize_filename(
            request.filename,
            max_length=self.settings.upload.max_filename_length,
            allowed_extensions=self.settings.validation.allowed_extensions,
            blocked_extensions=self.settings.validation.blocked_extensions,
        )
        now = utcnow()
        row = UploadSession(
            session_id=request.session_id or secrets.token_hex(16),
            filename=safe.name,
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
        session.add(row)
        session.flush()
        self.log_event(session, row, "upload_started", "session created")
        log.info(
            "upload session %s created by %s (%d chunks)",
            row.session_id,
            principal.username,
            total,
            extra={"session_id": row.session_id, "event": "session_created", "user": principal.username},
        )
        return row

    def _check_against_session(self, row: UploadSession, request: ChunkRequest, file_hash: str | None) -> None:
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

    # ------------------------------------------------------------------ stream
    def open_sink(self, plan: ChunkPlan) -> ChunkSink:
        if plan.mode is WriteMode.VERIFY:
            too_large: VidgateError = ChunkConflict(
                f"Chunk {plan.chunk_index} was already received with different bytes (it is longer)."
            )
        elif plan.total_chunks == 1:
            too_large = FileTooLarge(f"The file is larger than the limit of {plan.limit} bytes.")
        else:
            too_large = ChunkTooLarge(f"Chunk {plan.chunk_index} is larger than {plan.limit} bytes.")
        return ChunkSink(
            plan.fd,
            plan.offset,
            plan.limit,
            too_large,
            extra_hashers=[plan.frontier_hasher],
            fsync=self.settings.upload.fsync,
            head_check=plan.head_check,
            head_bytes=HEAD_BYTES,
        )

    def abort_chunk(self, plan: ChunkPlan, error: BaseException | None = None) -> None:
        """The chunk broke off or was refused: keep no trace of it, so it counts as missing.

        A refusal of the content itself (``error.fails_session``) fails the whole session, as
        does any failure of a session nobody else knows the id of yet."""
        if plan.frontier_hasher is not None:
            self.frontier.rollback(plan.upload_id)
        if plan.mode is WriteMode.STAGED:
            with contextlib.suppress(FileNotFoundError):
                plan.path.unlink()
        plan.close()
        refused = isinstance(error, VidgateError) and error.fails_session
        if refused or plan.anonymous_new_session:
            code = error.code if isinstance(error, VidgateError) else "upload_interrupted"
            message = error.message if isinstance(error, VidgateError) else "The upload broke off."
            self.fail(plan.upload_id, code, message)
        elif plan.mode is WriteMode.DIRECT and not self._has_chunks(plan.session_id):
            self.parts.remove(plan.upload_id)  # nothing acknowledged lives in it yet

    def _has_chunks(self, session_id: str) -> bool:
        with self.db.session() as session:
            return (
                session.scalar(select(UploadChunk.id).where(UploadChunk.session_id == session_id).limit(1)) is not None
            )

    # ------------------------------------------------------------------ finish
    def finish_chunk(self, plan: ChunkPlan, result: SinkResult) -> ChunkReceipt:
        """Record a fully received chunk; when it is the last one, assemble the file."""
        try:
            receipt, complete = self._record(plan, result)
        except BaseException as exc:
            self.abort_chunk(plan, exc)
            raise
        if plan.frontier_hasher is not None:
            self.frontier.commit(plan.upload_id, result.size)
        if (
            plan.mode is WriteMode.DIRECT
            and plan.total_chunks > 1
            and not receipt.duplicate_chunk
            and not complete
            and self.frontier.stored(plan.upload_id, plan.offset, result.size)
        ):  # chunks that came ahead of the frontier: hash them now, while others still arrive
            threading.Thread(
                target=self.frontier.catch_up, args=(plan.upload_id, plan.path), name="hash-catch-up", daemon=True
            ).start()
        plan.close()
        if complete:
            self.assemble(plan.upload_id)
            return receipt.model_copy(update=self._view(plan.session_id).model_dump())
        return receipt

    def _record(self, plan: ChunkPlan, result: SinkResult) -> tuple[ChunkReceipt, bool]:
        with self.db.session() as session:
            row = session.scalar(select(UploadSession).where(UploadSession.id == plan.upload_id).with_for_update())
            if row is None:
                raise SessionNotFound(f"No upload session {plan.session_id!r}.")
            if plan.mode is WriteMode.VERIFY:
                if result.sha256 != plan.existing_hash:
                    raise ChunkConflict(
                        f"Chunk {plan.chunk_index} was already received with different bytes; "
                        "a received chunk cannot be replaced."
                    )
                return self._receipt(session, row, plan, result, duplicate=True), False
            if row.status is not SessionStatus.ACTIVE:
                raise SessionNotActive(f"Upload session {row.session_id!r} is {row.status.value}.")
            self._check_chunk_size(session, row, plan, result.size)
            now = utcnow()
            session.add(
                UploadChunk(
                    session_id=row.session_id,
                    chunk_index=plan.chunk_index,
                    chunk_size=result.size,
                    chunk_hash=result.sha256,
                    storage_path=str(plan.path),
                    received=True,
                    verified=True,
                    received_at=now,
                    verified_at=now,
                )
            )
            if plan.mode is WriteMode.DIRECT and plan.chunk_index == 0 and row.total_chunks > 1 and not row.chunk_size:
                row.chunk_size = result.size
                if (row.total_chunks - 1) * result.size >= self.limits.max_file_size:
                    raise FileTooLarge(
                        f"{row.total_chunks} chunks of {result.size} bytes exceed the limit of "
                        f"{self.limits.max_file_size} bytes."
                    )
            session.flush()
            sizes = {
                index: size
                for index, size in session.execute(
                    select(UploadChunk.chunk_index, UploadChunk.chunk_size).where(
                        UploadChunk.session_id == row.session_id
                    )
                )
            }
            count, total_bytes = len(sizes), sum(sizes.values())
            if total_bytes > self.limits.max_file_size:
                raise FileTooLarge(
                    f"With this chunk the file would be {total_bytes} bytes; the limit is "
                    f"{self.limits.max_file_size} bytes."
                )
            row.chunks_received = count
            row.bytes_received = total_bytes
            row.last_updated = now
            metrics.UPLOAD_BYTES.labels("chunks").inc(result.size)
            complete = count == row.total_chunks
            if complete:
                row.status = SessionStatus.ASSEMBLING
            self.log_event(session, row, "upload_progress", f"chunk {plan.chunk_index} received")
            receipt = self._receipt(session, row, plan, result, duplicate=False, received=set(sizes))
            if self.events is not None and self.events.progress_due(f"upload:{plan.session_id}", final=complete):
                self.events.to_user(
                    UploadProgress(
                        session_id=row.session_id,
                        data=UploadProgressData(
                            chunks_received=receipt.chunks_received,
                            total_chunks=receipt.total_chunks,
                            bytes_received=receipt.bytes_received,
                            progress_percentage=receipt.progress_percentage,
                        ),
                    ),
                    row.user_id,
                    session,
                )
            return receipt, complete

    def _check_chunk_size(self, session: Session, row: UploadSession, plan: ChunkPlan, size: int) -> None:
        if size == 0:
            what = "The file" if row.total_chunks == 1 else f"Chunk {plan.chunk_index}"
            raise EmptyChunk(f"{what} is empty (0 bytes); send its bytes in the 'file' part.")
        last = plan.chunk_index == row.total_chunks - 1
        if row.total_chunks == 1:
            if row.file_size is not None and size != row.file_size:
                raise InvalidParameter(f"The file has {size} bytes but file_size announced {row.file_size}.")
            return
        chunk_size = row.chunk_size
        if chunk_size is None:
            # Not learnt yet: compare with the chunks staged so far (all but the last share one size).
            sizes = session.execute(
                select(UploadChunk.chunk_index, UploadChunk.chunk_size).where(UploadChunk.session_id == row.session_id)
            ).all()
            full = {s for i, s in sizes if i != row.total_chunks - 1}
            tail = [s for i, s in sizes if i == row.total_chunks - 1]
            if not last and full and size not in full:
                raise ChunkSizeMismatch(f"Chunk {plan.chunk_index} has {size} bytes; earlier chunks have {min(full)}.")
            if not last and tail and size < tail[0]:
                raise ChunkSizeMismatch(
                    f"Chunk {plan.chunk_index} has {size} bytes, fewer than the last chunk's {tail[0]}."
                )
            if last and full and size > min(full):
                raise ChunkSizeMismatch(f"The last chunk has {size} bytes, more than the chunk size {min(full)}.")
            return
        if not last and size != chunk_size:
            raise ChunkSizeMismatch(
                f"Chunk {plan.chunk_index} has {size} bytes; every chunk but the last must have {chunk_size}."
            )
        if last:
            expected = row.file_size - plan.chunk_index * chunk_size if row.file_size is not None else None
            if expected is not None and size != expected:
                raise ChunkSizeMismatch(f"The last chunk has {size} bytes; file_size requires {expected}.")
            if size > chunk_size:
                raise ChunkSizeMismatch(f"The last chunk has {size} bytes, more than the chunk size {chunk_size}.")

    # ------------------------------------------------------------------ assembly
    def assemble(self, upload_id: str) -> None:
        """Turn the received data of an ``assembling`` session into a stored, hash-checked file.

        Safe to run again after a crash at any point (cleanup does so for stalled sessions).
        """
        with self.db.session() as session:
            row = session.get(UploadSession, upload_id)
            if row is None or row.status is not SessionStatus.ASSEMBLING:
                return
            chunks = session.scalars(
                select(UploadChunk).where(UploadChunk.session_id == row.session_id).order_by(UploadChunk.chunk_index)
            ).all()
            snapshot = [(c.chunk_index, c.chunk_size, c.storage_path) for c in chunks]
            single_hash = chunks[0].chunk_hash if len(chunks) == 1 and row.protocol != "tus" else None
            session_id, total, file_hash = row.session_id, row.total_chunks, row.file_hash
            appended = row.protocol == "tus"
            appended_size = row.file_size
            known_hash = row.content_hash
        part = self.parts.part_path(upload_id)
        file_size = (appended_size or 0) if appended else sum(size for _, size, _ in snapshot)
        if not part.exists():
            if known_hash and self.blobs.exists(known_hash):
                self._complete(upload_id, known_hash, file_size, {})
                return
            self.fail(upload_id, "assembly_failed", "The received data was lost before it could be assembled.")
            return
        if not appended and len(snapshot) != total:
            self.fail(upload_id, "assembly_failed", "Chunks are missing at assembly.")
            return
        try:
            fd = os.open(part, os.O_RDWR)
            try:
                if not appended:
                    chunk_size = max(size for _, size, _ in snapshot)
                    for index, size, path in snapshot:
                        if path != str(part):
                            place_chunk(Path(path), fd, index * chunk_size, size)
                os.ftruncate(fd, file_size)
                digest = single_hash or self._file_hash(upload_id, fd, file_size)
                if self.settings.upload.fsync:
                    os.fdatasync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise translate_os_error(exc) from exc
        if file_hash is not None and digest != file_hash:
            message = f"The file's SHA-256 is {digest}, not the file_hash {file_hash} the client sent."
            self.fail(upload_id, FileHashMismatch.code, message)
            raise FileHashMismatch(message, session_id=session_id)
        self._validate_and_store(upload_id, part, digest, file_size)

    def _validate_and_store(self, upload_id: str, part: Path, digest: str, file_size: int) -> None:
        """The common end of every protocol: validate the whole file, move it to its blob, link the video."""
        with self.db.session() as session:
            row = session.get_one(UploadSession, upload_id)
            session_id, filename, content_type = row.session_id, row.filename, row.content_type
        try:
            info = self.validator.validate(part, filename.rpartition(".")[2].lower(), content_type)
        except VidgateError as exc:
            if exc.fails_session:
                self.fail(upload_id, exc.code, exc.message)
            raise  # anything else (the scanner is down): the session stays assembling, retried later
        log.info("upload %s validated: %s", session_id, info.model_dump(exclude_none=True))
        with self.db.session() as session:
            session.execute(
                update(UploadSession)
                .where(UploadSession.id == upload_id)
                .values(content_hash=digest, file_size=file_size, last_updated=utcnow())
            )
            session.execute(
                update(UploadChunk).where(UploadChunk.session_id == session_id).values(storage_path=str(part))
            )
        self.blobs.put_file(digest, part)
        self._complete(upload_id, digest, file_size, info.model_dump(exclude_none=True))

    def _file_hash(self, upload_id: str, fd: int, file_size: int) -> str:
        """Continue the running hash from where in-order chunks left it; read only the rest."""
        hasher, upto = self.frontier.take(upload_id)
        if upto > file_size:
            hasher, upto = new_sha256(), 0
        update_from_fd(hasher, fd, upto, file_size)
        return str(hasher.hexdigest())

    def _complete(self, upload_id: str, digest: str, file_size: int, media_info: dict[str, Any]) -> None:
        """Link the session to its owner's video of this content (made now if the owner has none)
        and queue processing unless the answer is already known (see :mod:`vidgate.dedup`)."""
        with self.db.session() as session:
            row = session.get_one(UploadSession, upload_id)
            now = utcnow()
            content, content_is_new = self._content_for(session, digest, file_size, media_info, now)
            video, video_is_new = self._video_for(session, row, content, now)
            decision = dedup.decide(
                content,
                video,
                content_is_new=content_is_new,
                video_is_new=video_is_new,
                scope=self.settings.upload.dedup_scope,
                enabled=self.settings.upload.enable_deduplication,
                priority=row.priority,
                options=row.upload_options,
                now=now,
            )
            row.video_id = video.id
            row.status = SessionStatus.COMPLETED
            row.completed_at = now
            row.last_updated = now
            row.is_duplicate = decision.duplicate
            event = "duplicate_detected" if decision.duplicate else "upload_completed"
            self.log_event(session, row, event, f"stored as {digest}")
            video_id, session_id, user_id = video.id, row.session_id, row.user_id
            content_id, reused = content.id, not content_is_new
            protocol, took = row.protocol, (now - row.created_at).total_seconds()
            if self.events is not None:
                self.events.to_user(
                    UploadCompleted(
                        session_id=session_id,
                        video_id=video_id,
                        data=UploadCompletedData(video_id=video_id, content_hash=digest, file_size=file_size),
                    ),
                    user_id,
                    session,
                )
                if decision.duplicate:
                    self.events.to_user(
                        DuplicateDetected(
                            session_id=session_id,
                            video_id=video_id,
                            data=DuplicateDetectedData(
                                video_id=video_id,
                                content_hash=digest,
                                cached_result=self.events.result_lookup(video_id, session)
                                if self.settings.upload.enable_deduplication
                                else None,
                            ),
                        ),
                        user_id,
                        session,
                    )
        metrics.UPLOADS.labels(protocol, "duplicate" if decision.duplicate else "completed").inc()
        metrics.UPLOAD_DURATION.labels(protocol).observe(took)
        metrics.DEDUP_LOOKUPS.inc()
        if decision.duplicate:
            metrics.DEDUP_HITS.inc()
        self.parts.remove(upload_id)
        self.locker.release_all(upload_id)
        log.info(
            "upload %s completed: video %s, sha256 %s, %d bytes%s",
            session_id,
            video_id,
            digest,
            file_size,
            " (known content)" if decision.duplicate else (" (stored content reused)" if reused else ""),
            extra={
                "session_id": session_id,
                "video_id": video_id,
                "content_id": content_id,
                "event": event,
                "content_hash": digest,
            },
        )
        if decision.queue_job and self.on_video_queued is not None:
            self.on_video_queued(video_id)

    @staticmethod
    def _content_for(
        session: Session, digest: str, file_size: int, media_info: dict[str, Any], now: datetime
    ) -> tuple[Content, bool]:
        """The content row of ``digest``, locked; made if new (a racing upload's row is read instead)."""
        content = session.scalar(select(Content).where(Content.content_hash == digest).with_for_update())
        if content is not None:
            return content, False
        try:
            with session.begin_nested():
                content = Content(
                    content_hash=digest,
                    file_size=file_size,
                    storage_key=digest,
                    media_info=media_info,
                    status=AnalysisStatus.PENDING,
                    created_at=now,
                )
                session.add(content)
            return content, True
        except IntegrityError:
            return session.scalars(select(Content).where(Content.content_hash == digest).with_for_update()).one(), False

    @staticmethod
    def _video_for(session: Session, row: UploadSession, content: Content, now: datetime) -> tuple[Video, bool]:
        """The owner's video of ``content``, locked; made from this upload if they have none."""
        mine = select(Video).where(Video.user_id == row.user_id, Video.content_id == content.id).with_for_update()
        video = session.scalar(mine)
        if video is not None:
            return video, False
        try:
            with session.begin_nested():
                video = Video(
                    user_id=row.user_id,
                    content_id=content.id,
                    filename=row.filename,
                    content_type=row.content_type,
                    status=VideoStatus.UPLOADED,
                    priority=row.priority,
                    processing_options=dict(row.upload_options or {}),
                    created_at=now,
                    updated_at=now,
                )
                session.add(video)
            return video, True
        except IntegrityError:  # the same owner's other upload of these bytes made it a moment ago
            return session.scalars(mine).one(), False

    def fail(self, upload_id: str, code: str, message: str) -> None:
        """End a session as refused: data deleted, reason kept, ``upload_failed`` published."""
        session_id = self._end(upload_id, SessionStatus.FAILED, code, message)[0]
        metrics.UPLOAD_FAILURES.labels(code).inc()
        log.warning(
            "upload %s failed (%s): %s",
            session_id,
            code,
            message,
            extra={"session_id": session_id, "event": "upload_failed", "error_code": code},
        )

    def _end(
        self, upload_id: str, status: SessionStatus, code: str | None, message: str | None
    ) -> tuple[str, str, int, int]:
        """Move a session to a terminal state and delete its data (chunk rows, part, staging);
        return its (session id, user id, chunks received, total chunks)."""
        with self.db.session() as session:
            row = session.get_one(UploadSession, upload_id)
            ended = (row.session_id, row.user_id, row.chunks_received, row.total_chunks)
            metrics.UPLOADS.labels(row.protocol, status.value).inc()
            row.status = status
            row.error_code = code
            row.error_message = message
            row.last_updated = utcnow()
            session.execute(delete(UploadChunk).where(UploadChunk.session_id == row.session_id))
            event = {SessionStatus.FAILED: "upload_failed", SessionStatus.EXPIRED: "session_expired"}.get(
                status, "upload_cancelled"
            )
            self.log_event(session, row, event, message)
            if self.events is not None and status is SessionStatus.FAILED:
                failure = FailureData(error_code=code or "upload_failed", message=message or "")
                self.events.to_user(UploadFailed(session_id=row.session_id, data=failure), row.user_id, session)
            elif self.events is not None and status is SessionStatus.EXPIRED:
                counts = SessionExpiredData(chunks_received=ended[2], total_chunks=ended[3])
                self.events.to_user(SessionExpired(session_id=row.session_id, data=counts), row.user_id, session)
        self.frontier.drop(upload_id)
        self.parts.remove(upload_id)
        self.locker.release_all(upload_id)
        return ended

    # ------------------------------------------------------------------ queries and commands
    def get_session(self, principal: Principal, session_id: str) -> SessionView:
        return self._view(session_id, owner=principal.user_id)

    def cancel_session(self, principal: Principal, session_id: str) -> SessionView:
        with self.db.session() as session:
            row = session.scalar(select(UploadSession).where(UploadSession.session_id == session_id).with_for_update())
            if row is None or row.user_id != principal.user_id:
                raise SessionNotFound(f"No upload session {session_id!r}.")
            status, upload_id = row.status, row.id
        if status in (SessionStatus.COMPLETED, SessionStatus.ASSEMBLING):
            raise SessionNotActive(f"Upload session {session_id!r} is {status.value}; it can no longer be cancelled.")
        if status is SessionStatus.ACTIVE:
            self._end(upload_id, SessionStatus.CANCELLED, "cancelled", "Cancelled by the client.")
            log.info("upload session %s cancelled", session_id)
        return self._view(session_id)

    def _view(self, session_id: str, owner: str | None = None) -> SessionView:
        """The session as clients see it; with ``owner``, another user's session is not found."""
        with self.db.session() as session:
            row = session.scalar(select(UploadSession).where(UploadSession.session_id == session_id))
            if row is None or (owner is not None and row.user_id != owner):
                raise SessionNotFound(f"No upload session {session_id!r}.")
            return _to_view(row, _received(session, session_id), self.settings.session_timeout)

    def _receipt(
        self,
        session: Session,
        row: UploadSession,
        plan: ChunkPlan,
        result: SinkResult,
        *,
        duplicate: bool,
        received: set[int] | None = None,
    ) -> ChunkReceipt:
        if received is None:
            received = _received(session, row.session_id)
        return ChunkReceipt(
            **_to_view(row, received, self.settings.session_timeout).model_dump(),
            chunk_index=plan.chunk_index,
            chunk_hash=result.sha256,
            chunk_bytes=result.size,
            duplicate_chunk=duplicate,
        )

    def log_event(self, session: Session, row: UploadSession, event_type: str, message: str | None) -> None:
        """A row of upload_progress_log, in the caller's transaction."""
        session.add(
            UploadProgressLog(
                session_id=row.session_id,
                event_type=event_type,
                chunks_received=row.chunks_received or 0,
                bytes_received=row.bytes_received or 0,
                progress_percentage=progress_percent(row.chunks_received or 0, row.total_chunks),
                message=message,
            )
        )

    # ------------------------------------------------------------------ cleanup
    def cleanup(self, now: datetime | None = None, orphan_grace_seconds: float = ORPHAN_GRACE_SECONDS) -> CleanupReport:
        """Expire active sessions idle for longer than the session timeout in force now (a changed
        UPLOAD_SESSION_TIMEOUT_HOURS applies to every session, not only to those written after the
        change), re-run stalled assemblies, purge finished chunk rows and remove part files no live
        session owns. Never touches a live session's data."""
        now = now or utcnow()
        report = CleanupReport()
        with self.db.session() as session:
            expired = session.scalars(  # status is indexed: only active sessions are compared
                select(UploadSession.id).where(
                    UploadSession.status == SessionStatus.ACTIVE,
                    UploadSession.last_updated < now - self.settings.session_timeout,
                )
            ).all()
            stalled = session.scalars(
                select(UploadSession.id).where(
                    UploadSession.status == SessionStatus.ASSEMBLING,
                    UploadSession.last_updated < now - timedelta(seconds=self.settings.upload.assembly_stall_seconds),
                )
            ).all()
            finished = select(UploadSession.session_id).where(
                UploadSession.status.in_([s.value for s in TERMINAL_STATUSES]), UploadSession.expires_at < now
            )
            purged = session.execute(delete(UploadChunk).where(UploadChunk.session_id.in_(finished)))
            report.purged_chunk_rows = int(getattr(purged, "rowcount", 0) or 0)
        for upload_id in expired:
            session_id = self._end(
                upload_id, SessionStatus.EXPIRED, "session_expired", "The session expired before it completed."
            )[0]
            report.expired_sessions += 1
            log.info(
                "upload session %s expired",
                session_id,
                extra={"session_id": session_id, "event": "session_expired"},
            )
        for upload_id in stalled:
            try:
                self.assemble(upload_id)
                report.reassembled_sessions += 1
            except VidgateError:
                report.failed_assemblies += 1
        report.orphan_uploads_removed = self._sweep_orphans(now, orphan_grace_seconds)
        metrics.CLEANUP_RUNS.inc()
        for action, count in report.model_dump().items():
            if count:
                metrics.CLEANUP.labels(action).inc(count)
        if report.expired_sessions or report.orphan_uploads_removed or report.reassembled_sessions:
            log.info("cleanup: %s", report.model_dump())
        return report

    def _sweep_orphans(self, now: datetime, grace_seconds: float) -> int:
        on_disk = list(self.parts.upload_ids_on_disk())
        if not on_disk:
            return 0
        with self.db.session() as session:
            live = set(
                session.scalars(
                    select(UploadSession.id).where(
                        UploadSession.id.in_([upload_id for upload_id, _ in on_disk]),
                        UploadSession.status.in_([SessionStatus.ACTIVE.value, SessionStatus.ASSEMBLING.value]),
                    )
                ).all()
            )
        removed = 0
        cutoff = now.timestamp() - grace_seconds
        for upload_id, mtime in on_disk:
            if upload_id not in live and mtime < cutoff:
                self.parts.remove(upload_id)
                self.locker.release_all(upload_id)
                removed += 1
        return removed


def check_first_bytes(head: bytes, *, extension: str, content_type: str | None) -> None:
    check_head(head, extension, content_type)


def progress_percent(done: int, total: int | None) -> float:
    """Progress in percent, two decimals; 0 while the total is unknown."""
    return round(100.0 * done / total, 2) if total else 0.0


def _received(session: Session, session_id: str) -> set[int]:
    """Indexes of the chunks a session holds."""
    return set(session.scalars(select(UploadChunk.chunk_index).where(UploadChunk.session_id == session_id)).all())


#: sessions whose data was deleted when they ended: their view comes from the row's counters
_ENDED_WITHOUT_DATA = frozenset({SessionStatus.FAILED, SessionStatus.CANCELLED, SessionStatus.EXPIRED})


def _to_view(row: UploadSession, received: set[int], timeout: timedelta) -> SessionView:
    """A failed, cancelled or expired session's chunks were deleted with its data: its counters
    then say what had arrived before it ended (chunks and bytes alike, as its end event and log
    row do), and nothing is missing since it takes no more chunks."""
    done = row.status is SessionStatus.COMPLETED
    ended = row.status in _ENDED_WITHOUT_DATA
    chunks_received = row.total_chunks if done else (row.chunks_received or 0) if ended else len(received)
    if row.protocol == "tus":  # appended at an offset: progress is in bytes, nothing is ever "missing"
        percentage = 100.0 if done else progress_percent(row.bytes_received, row.file_size)
    else:
        percentage = 100.0 if done else progress_percent(chunks_received, row.total_chunks)
    return SessionView(
        session_id=row.session_id,
        upload_id=row.session_id,
        filename=row.filename,
        content_type=row.content_type,
        status=row.status,
        total_chunks=row.total_chunks,
        chunk_size=row.chunk_size,
        chunks_received=chunks_received,
        missing_chunks=[] if done or ended else [i for i in range(row.total_chunks) if i not in received],
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


def place_chunk(source: Path, fd: int, offset: int, size: int) -> None:
    """Copy a staged chunk into the part file inside the kernel (no user-space copy)."""
    src = os.open(source, os.O_RDONLY)
    try:
        copied = 0
        while copied < size:
            n = os.copy_file_range(src, fd, size - copied, copied, offset + copied)
            if n == 0:
                raise OSError(f"staged chunk {source} ended early")
            copied += n
    finally:
        os.close(src)
