"""tus 1.0 uploads on the same session store, validation, dedup, processing and events as
the seed API (https://tus.io/protocols/resumable-upload).

A tus upload is an ``upload_session`` row with ``protocol = "tus"``: bytes are appended at
``bytes_received`` (the tus offset) into the same part file, one ``upload_chunk`` row per
PATCH with its SHA-256, and the whole-file hash runs along while the bytes stream in order.
When the offset reaches the length the session is assembled exactly like a chunked one.

Write path of one PATCH: :meth:`TusService.begin_patch` (lock, offset check, open the part
file), :meth:`TusService.open_sink` (the caller streams the body into it), then
:meth:`TusService.finish_patch`, or :meth:`TusService.keep_received` when the body broke
off (every byte that reached the server is kept and counted, so the client resumes from the
true offset), or :meth:`TusService.abort_patch` for a refusal.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import logging
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, NamedTuple, Protocol, cast

from pydantic import BaseModel
from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from vidgate import metrics
from vidgate.auth import Principal
from vidgate.db.models import SessionStatus, UploadChunk, UploadProgressLog, UploadSession, new_id, utcnow
from vidgate.errors import (
    ChecksumMismatch,
    ChunkInProgress,
    FileTooLarge,
    FinalUploadImmutable,
    InvalidParameter,
    OffsetMismatch,
    SessionNotActive,
    SessionNotFound,
    UploadGone,
    UploadLocked,
    VidgateError,
)
from vidgate.events.schema import UploadProgress, UploadProgressData, UploadStarted, UploadStartedData
from vidgate.storage import translate_os_error
from vidgate.uploads.service import UploadService, check_first_bytes, place_chunk, progress_percent
from vidgate.uploads.writer import ChunkSink, SinkResult
from vidgate.validation import sanitize_filename
from vidgate.validation.formats import HEAD_BYTES

log = logging.getLogger(__name__)

TUS_VERSION = "1.0.0"
EXTENSIONS = (
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "expiration",
    "checksum",
    "termination",
    "concatenation",
)
CHECKSUM_ALGORITHMS: dict[str, Callable[[], Any]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "md5": hashlib.md5,
}
_GONE = (SessionStatus.FAILED, SessionStatus.CANCELLED, SessionStatus.EXPIRED)


class TusUpload(BaseModel):
    """What HEAD reports of an upload (and what the API adds in its own headers)."""

    upload_id: str
    offset: int
    length: int | None
    metadata: str | None
    expires_at: datetime
    concat: str | None
    concat_parts: list[str]
    status: SessionStatus
    video_id: str | None
    duplicate: bool
    content_hash: str | None


def parse_metadata(header: str | None) -> dict[str, str]:
    """``Upload-Metadata: key base64,key2 base64,flag`` as a dict (a key without value maps to "")."""
    result: dict[str, str] = {}
    if not header:
        return result
    for pair in header.split(","):
        parts = pair.strip().split(" ")
        if not parts[0] or len(parts) > 2:
            raise InvalidParameter(f"Upload-Metadata: {pair.strip()[:60]!r} is not 'key base64-value'.")
        value = ""
        if len(parts) == 2:
            try:
                value = base64.b64decode(parts[1], validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise InvalidParameter(f"Upload-Metadata: the value of {parts[0]!r} is not base64 of UTF-8.") from exc
        result[parts[0]] = value
    return result


def parse_checksum(header: str | None) -> tuple[str, bytes] | None:
    """``Upload-Checksum: sha1 <base64>`` as (algorithm, digest)."""
    if header is None:
        return None
    algorithm, _, encoded = header.strip().partition(" ")
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise InvalidParameter(
            f"Upload-Checksum algorithm {algorithm!r} is not supported; use one of {', '.join(CHECKSUM_ALGORITHMS)}."
        )
    try:
        return algorithm, base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise InvalidParameter("Upload-Checksum: the digest is not base64.") from exc


# What a PATCH runs on every call, built once (see TusService._record).
_SESSIONS = cast(Table, UploadSession.__table__)
_ADVANCE = (
    update(_SESSIONS)
    .where(
        _SESSIONS.c.id == bindparam("upload_id"),
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
    .where(_SESSIONS.c.id == bindparam("upload_id"))
    .with_for_update()
)
_TOUCH = (
    update(_SESSIONS)
    .where(_SESSIONS.c.id == bindparam("upload_id"), _SESSIONS.c.status == SessionStatus.ACTIVE)
    .values(file_size=bindparam("file_size"), last_updated=bindparam("now"), expires_at=bindparam("expires_at"))
)
_MARK_ASSEMBLING = (
    update(_SESSIONS).where(_SESSIONS.c.id == bindparam("upload_id")).values(status=SessionStatus.ASSEMBLING)
)
_INSERT_CHUNK = insert(cast(Table, UploadChunk.__table__))
_INSERT_PROGRESS = insert(cast(Table, UploadProgressLog.__table__))


class _Recorded(NamedTuple):
    """What one recorded PATCH left: the upload after it, and what its progress event needs."""

    upload: TusUpload
    chunks: int
    user_id: str
    complete: bool


@dataclass
class PatchPlan:
    upload_id: str
    session_id: str
    offset: int
    limit: int
    partial: bool
    fd: int | None = None
    frontier_hasher: Any | None = None
    checksum: tuple[str, bytes] | None = None
    checksum_hasher: Any | None = None
    head_check: Callable[[bytes], None] | None = None
    locks: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.locks.close()


class _Identity(NamedTuple):
    """What never changes about a tus upload once created: enough to lock it and check its owner."""

    row_id: str
    user_id: str
    concat: str | None


class TusService:
    def __init__(self, uploads: UploadService, max_remembered: int = 10_000) -> None:
        self.uploads = uploads
        self.db = uploads.db
        self.limits = uploads.limits
        self.settings = uploads.settings
        # upload id -> identity, so a PATCH goes straight to its locked transaction instead of
        # first reading the row to learn which lock to take (one transaction less per PATCH)
        self._identities: OrderedDict[str, _Identity] = OrderedDict()
        self._identities_lock = threading.Lock()
        self._max_remembered = max_remembered

    @property
    def max_size(self) -> int:
        return self.limits.max_file_size

    # ------------------------------------------------------------------ creation
    def create(
        self,
        principal: Principal,
        *,
        length: int | None,
        metadata_header: str | None,
        partial_upload: bool = False,
    ) -> TusUpload:
        """A new upload of ``length`` bytes (None: announced later, creation-defer-length)."""
        metadata = parse_metadata(metadata_header)
        if length is not None and length > self.max_size:
            raise FileTooLarge(f"Upload-Length {length} exceeds the limit of {self.max_size} bytes (Tus-Max-Size).")
        filename, content_type, priority = self._describe(metadata, partial_upload)
        with self.db.session() as session:
            row = self._new_row(
                principal,
                metadata_header,
                session_id=secrets.token_hex(16),
                filename=filename,
                content_type=content_type,
                priority=priority,
                file_size=length,
                total_chunks=0,
                chunks_received=0,
                bytes_received=0,
                status=SessionStatus.ACTIVE,
                concat="partial" if partial_upload else None,
            )
            session.add(row)
            session.flush()
            self.uploads.log_event(session, row, "upload_started", "tus upload created")
            session_id, upload_id = row.session_id, row.id
            if not partial_upload:
                self._announce(session, principal.user_id, session_id, filename, length)
        self._remember(session_id, _Identity(upload_id, principal.user_id, row.concat))
        log.info(
            "tus upload %s created by %s (%s bytes)",
            session_id,
            principal.username,
            length,
            extra={"session_id": session_id, "event": "session_created", "user": principal.username},
        )
        if length == 0 and not partial_upload:
            self._complete_appended(upload_id)
        return self.get(principal, session_id)

    def concatenate(self, principal: Principal, part_ids: list[str], metadata_header: str | None) -> TusUpload:
        """A final upload made of complete partial uploads, in the order given (concatenation)."""
        if not part_ids:
            raise InvalidParameter("Upload-Concat: final needs at least one partial upload.")
        metadata = parse_metadata(metadata_header)
        filename, content_type, priority = self._describe(metadata, False)
        with self.db.session() as session:
            rows = {
                r.session_id: r
                for r in session.scalars(select(UploadSession).where(UploadSession.session_id.in_(part_ids)))
            }
            parts: list[tuple[str, int]] = []
            for part_id in part_ids:
                row = rows.get(part_id)
                if row is None or row.user_id != principal.user_id or row.protocol != "tus":
                    raise SessionNotFound(f"No upload {part_id!r}.")
                if row.concat != "partial":
                    raise InvalidParameter(f"Upload {part_id!r} is not a partial upload (Upload-Concat: partial).")
                if (
                    row.status is not SessionStatus.ACTIVE
                    or row.file_size is None
                    or row.bytes_received != row.file_size
                ):
                    raise InvalidParameter(f"Partial upload {part_id!r} is not complete; finish it first.")
                parts.append((row.id, row.file_size))
        total = sum(size for _, size in parts)
        if total > self.max_size:
            raise FileTooLarge(f"The parts add up to {total} bytes; the limit is {self.max_size}.")
        final_id = secrets.token_hex(16)
        with contextlib.ExitStack() as locks:
            for upload_id, _ in parts:
                locks.enter_context(self._lock(upload_id))
            row_id = new_id()
            fd = self.uploads.parts.open_part(row_id, reserve=total or None)
            try:
                offset = 0
                for upload_id, size in parts:
                    place_chunk(self.uploads.parts.part_path(upload_id), fd, offset, size)
                    offset += size
            except OSError as exc:
                raise translate_os_error(exc) from exc
            finally:
                os.close(fd)
            now = utcnow()
            with self.db.session() as session:
                for part_row in session.scalars(
                    select(UploadSession).where(UploadSession.session_id.in_(part_ids)).with_for_update()
                ):
                    if part_row.status is not SessionStatus.ACTIVE:
                        raise SessionNotActive(f"Partial upload {part_row.session_id!r} is {part_row.status.value}.")
                    part_row.status = SessionStatus.COMPLETED
                    part_row.completed_at = part_row.last_updated = now
                row = self._new_row(
                    principal,
                    metadata_header,
                    id=row_id,
                    session_id=final_id,
                    filename=filename,
                    content_type=content_type,
                    priority=priority,
                    file_size=total,
                    total_chunks=len(parts),
                    chunks_received=len(parts),
                    bytes_received=total,
                    status=SessionStatus.ASSEMBLING,
                    concat="final",
                    concat_parts=part_ids,
                )
                session.add(row)
                session.flush()
                self.uploads.log_event(session, row, "upload_started", f"tus final upload of {len(parts)} parts")
                self._announce(session, principal.user_id, final_id, filename, total)
        for upload_id, _ in parts:
            self.uploads.parts.remove(upload_id)
        self.uploads.assemble(row_id)
        return self.get(principal, final_id)

    def _new_row(self, principal: Principal, metadata_header: str | None, **fields: Any) -> UploadSession:
        """A tus session row of ``principal``: what every tus row shares, plus ``fields``."""
        now = utcnow()
        return UploadSession(
            user_id=principal.user_id,
            username=principal.username,
            upload_options={},
            protocol="tus",
            upload_metadata=metadata_header,
            created_at=now,
            last_updated=now,
            expires_at=now + timedelta(seconds=self.settings.session_timeout_seconds),
            **fields,
        )

    def _describe(self, metadata: dict[str, str], partial_upload: bool) -> tuple[str, str | None, int]:
        """File name, type and priority from Upload-Metadata, checked like the seed API's fields."""
        raw_priority = metadata.get("priority")
        priority = self.settings.processing.default_priority
        if raw_priority:
            try:
                priority = int(raw_priority)
            except ValueError as exc:
                raise InvalidParameter(f"Upload-Metadata priority must be an integer, got {raw_priority!r}.") from exc
        self.limits.check_priority(priority)
        kind = metadata.get("filetype") or metadata.get("type")
        content_type = kind[:100] if kind else None
        if partial_upload:  # named by its final upload; clients send partials without metadata
            return "partial", content_type, priority
        safe = sanitize_filename(
            metadata.get("filename") or metadata.get("name"),
            max_length=self.settings.upload.max_filename_length,
            allowed_extensions=self.settings.validation.allowed_extensions,
            blocked_extensions=self.settings.validation.blocked_extensions,
        )
        return safe.name, content_type, priority

    def _announce(self, session: Session, user_id: str, session_id: str, filename: str, length: int | None) -> None:
        """``upload_started``, in the transaction that creates the upload."""
        if self.uploads.events is not None:
            self.uploads.events.to_user(
                UploadStarted(
                    session_id=session_id,
                    data=UploadStartedData(filename=filename, total_chunks=1, file_size=length),
                ),
                user_id,
                session,
            )

    # ------------------------------------------------------------------ queries
    def _row(self, principal: Principal, upload_id: str) -> UploadSession:
        with self.db.session() as session:
            row = session.scalar(select(UploadSession).where(UploadSession.session_id == upload_id))
            if row is None or row.user_id != principal.user_id or row.protocol != "tus":
                raise SessionNotFound(f"No upload {upload_id!r}.")
            session.expunge(row)
        self._remember(upload_id, _Identity(row.id, row.user_id, row.concat))
        return row

    def _remember(self, upload_id: str, identity: _Identity) -> None:
        with self._identities_lock:
            self._identities[upload_id] = identity
            self._identities.move_to_end(upload_id)
            while len(self._identities) > self._max_remembered:
                self._identities.popitem(last=False)

    def _identity(self, principal: Principal, upload_id: str) -> _Identity:
        """Who owns ``upload_id`` and which row it is: remembered, or read once."""
        with self._identities_lock:
            identity = self._identities.get(upload_id)
        if identity is None:
            row = self._row(principal, upload_id)
            identity = _Identity(row.id, row.user_id, row.concat)
        if identity.user_id != principal.user_id:
            raise SessionNotFound(f"No upload {upload_id!r}.")
        return identity

    def get(self, principal: Principal, upload_id: str) -> TusUpload:
        """The upload as HEAD reports it; 410 once it expired, was terminated or refused."""
        row = self._row(principal, upload_id)
        _check_alive(row, self.settings.session_timeout)
        return _to_upload(row, self.settings.session_timeout)

    def terminate(self, principal: Principal, upload_id: str) -> None:
        """termination: stop an unfinished upload and free its space."""
        row = self._row(principal, upload_id)
        _check_alive(row, self.settings.session_timeout)
        self.uploads.cancel_session(principal, upload_id)

    # ------------------------------------------------------------------ PATCH
    def _lock(self, upload_id: str) -> contextlib.AbstractContextManager[None]:
        @contextlib.contextmanager
        def hold() -> Any:
            try:
                with self.uploads.locker.hold(upload_id, "tus"):
                    yield
            except ChunkInProgress as exc:
                raise UploadLocked("Another request is writing this upload; retry when it ends.") from exc

        return hold()

    def begin_patch(
        self, principal: Principal, upload_id: str, offset: int, *, length: int | None, checksum: str | None
    ) -> PatchPlan:
        """Lock the upload, check the offset (409 when it is not where the upload stands), open the file."""
        expected = parse_checksum(checksum)
        identity = self._identity(principal, upload_id)
        plan = PatchPlan(
            upload_id=identity.row_id,
            session_id=upload_id,
            offset=offset,
            limit=0,
            partial=identity.concat == "partial",
        )
        try:
            plan.locks.enter_context(self._lock(identity.row_id))
            with self.db.session() as session:
                connection = session.connection()
                row = connection.execute(_PATCH_TARGET, {"upload_id": identity.row_id}).one_or_none()
                if row is None:  # purged since it was remembered
                    raise UploadGone("The upload no longer exists.")
                _check_alive(row, self.settings.session_timeout)
                if row.concat == "final":
                    raise FinalUploadImmutable("A final (concatenated) upload takes no PATCH.")
                if offset != row.bytes_received:
                    raise OffsetMismatch(f"Upload-Offset is {offset} but the upload is at {row.bytes_received}.")
                if row.status is not SessionStatus.ACTIVE:
                    raise SessionNotActive(f"The upload is {row.status.value}; it takes no more data.")
                file_size = row.file_size
                if length is not None:
                    if file_size is None:
                        if length < row.bytes_received or length > self.max_size:
                            raise InvalidParameter(
                                f"Upload-Length {length} must lie between the offset {row.bytes_received} "
                                f"and {self.max_size}."
                            )
                        file_size = length
                    elif length != file_size:
                        raise InvalidParameter(f"Upload-Length {length} differs from the upload's {file_size}.")
                now = utcnow()
                expires_at = now + timedelta(seconds=self.settings.session_timeout_seconds)
                connection.execute(
                    _TOUCH,
                    {"upload_id": identity.row_id, "file_size": file_size, "now": now, "expires_at": expires_at},
                )
                end = file_size if file_size is not None else self.max_size
                plan.limit = end - offset
                if offset == 0 and not plan.partial:
                    extension = row.filename.rpartition(".")[2].lower()
                    plan.head_check = partial(check_first_bytes, extension=extension, content_type=row.content_type)
                reserve = file_size if offset == 0 and file_size else None
            plan.fd = self.uploads.parts.open_part(identity.row_id, reserve=reserve)
            plan.frontier_hasher = self.uploads.frontier.claim(identity.row_id, offset)
            if expected is not None:
                plan.checksum = expected
                plan.checksum_hasher = CHECKSUM_ALGORITHMS[expected[0]]()
        except BaseException:
            plan.close()
            raise
        return plan

    def open_sink(self, plan: PatchPlan) -> ChunkSink:
        return ChunkSink(
            plan.fd,
            plan.offset,
            plan.limit,
            FileTooLarge(f"The body goes past the upload's length (at most {plan.limit} more bytes)."),
            extra_hashers=[plan.frontier_hasher, plan.checksum_hasher],
            hash_body=False,  # the running file hash (or assembly, after a restart) covers these bytes
            fsync=self.settings.upload.fsync,
            head_check=plan.head_check,
            head_bytes=HEAD_BYTES,
        )

    def finish_patch(self, plan: PatchPlan, result: SinkResult) -> TusUpload:
        """Record a whole PATCH body; the one that reaches the length assembles the file.
        Returns the upload as it stands after this PATCH."""
        try:
            checksum, hasher = plan.checksum, plan.checksum_hasher
            if checksum is not None and hasher is not None and hasher.digest() != checksum[1]:
                raise ChecksumMismatch(f"The body's {checksum[0]} does not match Upload-Checksum; nothing was kept.")
            recorded = self._record(plan, result)
        except BaseException as exc:
            self.abort_patch(plan, exc)
            raise
        return self._after_record(plan, recorded)

    def keep_received(self, plan: PatchPlan, result: SinkResult | None) -> None:
        """The body broke off: keep and count every byte that reached the file (none with a
        checksum, which cannot be verified on a partial body)."""
        if result is None or plan.checksum is not None or result.size == 0:
            self.abort_patch(plan, None)
            return
        try:
            recorded = self._record(plan, result)
        except BaseException as exc:
            self.abort_patch(plan, exc)
            raise
        offset = recorded.upload.offset
        log.info("tus upload %s broke off; kept %d bytes, now at %d", plan.session_id, result.size, offset)
        self._after_record(plan, recorded)

    def abort_patch(self, plan: PatchPlan, error: BaseException | None) -> None:
        """Refused or lost: the offset stays where it was (bytes past it are overwritten later)."""
        if plan.frontier_hasher is not None:
            self.uploads.frontier.rollback(plan.upload_id)
        plan.close()
        if isinstance(error, VidgateError) and error.fails_session:
            self.uploads.fail(plan.upload_id, error.code, error.message)

    def _record(self, plan: PatchPlan, result: SinkResult) -> _Recorded:
        """Count the PATCH with statements built once (building SQLAlchemy statements per call
        cost more than running them): one conditional UPDATE ... RETURNING (still active and
        still at this offset, or nothing happens), its chunk row and its progress row."""
        size, now = result.size, utcnow()
        with self.db.session() as session:
            connection = session.connection()
            row = connection.execute(
                _ADVANCE,
                {"upload_id": plan.upload_id, "offset": plan.offset, "size": size, "added": int(size > 0), "now": now},
            ).one_or_none()
            if row is None:
                now_at = session.scalar(select(UploadSession.bytes_received).where(UploadSession.id == plan.upload_id))
                raise OffsetMismatch(f"The upload moved on while this PATCH was written (now at {now_at}).")
            if size:
                connection.execute(
                    _INSERT_CHUNK,
                    {
                        "id": new_id(),
                        "session_id": row.session_id,
                        "chunk_index": row.chunks_received - 1,
                        "chunk_size": size,
                        "chunk_hash": result.sha256,
                        "storage_path": str(self.uploads.parts.part_path(plan.upload_id)),
                        "received": True,
                        "verified": True,
                        "received_at": now,
                        "verified_at": now,
                    },
                )
                metrics.UPLOAD_BYTES.labels("tus").inc(size)
            complete = row.file_size is not None and row.bytes_received == row.file_size
            status = row.status
            if complete and row.concat != "partial":
                status = SessionStatus.ASSEMBLING
                connection.execute(_MARK_ASSEMBLING, {"upload_id": plan.upload_id})
            connection.execute(
                _INSERT_PROGRESS,
                {
                    "id": new_id(),
                    "session_id": row.session_id,
                    "event_type": "upload_progress",
                    "chunks_received": row.chunks_received,
                    "bytes_received": row.bytes_received,
                    "progress_percentage": progress_percent(row.bytes_received, row.file_size),
                    "message": f"{size} bytes at offset {plan.offset}",
                    "details": {},
                    "created_at": now,
                },
            )
            events = self.uploads.events
            if (
                events is not None
                and row.concat != "partial"
                and events.progress_due(f"upload:{plan.session_id}", final=complete)
            ):
                events.to_user(
                    UploadProgress(
                        session_id=row.session_id,
                        data=UploadProgressData(
                            chunks_received=row.chunks_received,
                            total_chunks=row.chunks_received,
                            bytes_received=row.bytes_received,
                            progress_percentage=progress_percent(row.bytes_received, row.file_size),
                        ),
                    ),
                    row.user_id,
                    session,
                )
        upload = _to_upload(row, self.settings.session_timeout, status=status)
        return _Recorded(upload, row.chunks_received, row.user_id, complete)

    def _after_record(self, plan: PatchPlan, recorded: _Recorded) -> TusUpload:
        upload, complete = recorded.upload, recorded.complete
        offset = upload.offset
        if plan.frontier_hasher is not None:
            self.uploads.frontier.commit(plan.upload_id, offset - plan.offset)
        plan.close()
        if complete and not plan.partial:
            self._complete_appended(plan.upload_id)
            with self.db.session() as session:  # assembled: now with its video and content hash
                return _to_upload(session.get_one(UploadSession, plan.upload_id), self.settings.session_timeout)
        return upload

    def _complete_appended(self, upload_id: str) -> None:
        with self.db.session() as session:
            row = session.get_one(UploadSession, upload_id)
            if row.status is SessionStatus.ACTIVE:
                row.status = SessionStatus.ASSEMBLING
        if not self.uploads.parts.part_path(upload_id).exists():
            os.close(self.uploads.parts.open_part(upload_id))  # an empty file, which validation refuses
        self.uploads.assemble(upload_id)


class _Liveness(Protocol):
    status: SessionStatus
    error_message: str | None
    last_updated: datetime


def _check_alive(row: _Liveness, timeout: timedelta) -> None:
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


def _to_upload(row: _UploadFields, timeout: timedelta, *, status: SessionStatus | None = None) -> TusUpload:
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
