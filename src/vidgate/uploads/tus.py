"""tus 1.0 uploads: a PATCH appends at the offset, on the shared write path and completion.

A tus upload is an ``upload_session`` row with ``protocol = "tus"``: bytes are appended at
``bytes_received`` (the tus offset) into the upload's part, one ``upload_chunk`` row per PATCH,
and the whole-file hash runs along while the bytes stream in order. When the offset reaches
the length the session is completed exactly like a chunked one (:mod:`vidgate.uploads.completion`).
Creation lives in :mod:`vidgate.uploads.tus_create`, the statements and reads in
:mod:`vidgate.uploads.tus_store`, the header grammar at the HTTP edge (:mod:`vidgate.api.tus`).

Write path of one PATCH: :meth:`TusService.begin_patch` (lock, offset check, open the part),
:meth:`TusService.open_sink` (the caller streams the body into it), then
:meth:`TusService.finish_patch`, or :meth:`TusService.keep_received` when the body broke
off (every byte that reached the server is kept and counted, so the client resumes from the
true offset), or :meth:`TusService.abort_patch` for a refusal.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from sqlalchemy import select

from vidgate import metrics
from vidgate.auth import Principal
from vidgate.db.models import SessionStatus, UploadSession, utcnow
from vidgate.errors import (
    ChecksumMismatch,
    FileTooLarge,
    FinalUploadImmutable,
    InvalidParameter,
    OffsetMismatch,
    SessionNotActive,
    UploadGone,
)
from vidgate.uploads import tus_store
from vidgate.uploads.completion import Pending
from vidgate.uploads.ending import Endings
from vidgate.uploads.frontier import TAKE_WAIT_SECONDS
from vidgate.uploads.layouts import Assembly, progress_percent
from vidgate.uploads.models import TusUpload
from vidgate.uploads.records import TOUCH_AFTER, Records
from vidgate.uploads.step import Step, UploadDeps
from vidgate.uploads.tus_store import TusStore, check_alive, to_upload
from vidgate.uploads.writer import ChunkSink, SinkResult
from vidgate.uploads.writing import Checksum, WritePath, WritePlan, first_bytes_check
from vidgate.validation.pipeline import ProbeInFlight

log = logging.getLogger(__name__)


class _Recorded(NamedTuple):
    """What one recorded PATCH left: the upload after it, and whether it reached its length."""

    upload: TusUpload
    complete: bool
    pending: Pending | None = None  # what assembly needs, when this PATCH completed the upload


class TusService(Step):
    def __init__(
        self, deps: UploadDeps, writes: WritePath, records: Records, endings: Endings, store: TusStore
    ) -> None:
        super().__init__(deps)
        self.writes = writes
        self.records = records
        self.endings = endings
        self.store = store

    @property
    def max_size(self) -> int:
        return self.limits.max_file_size

    def get(self, principal: Principal, upload_id: str) -> TusUpload:
        """The upload as HEAD reports it; 410 once it expired, was terminated or refused."""
        return self.store.get(principal, upload_id)

    def terminate(self, principal: Principal, upload_id: str) -> None:
        """termination: stop an unfinished upload and free its space."""
        row = self.store.row(principal, upload_id)
        check_alive(row, self.settings.session_timeout)
        self.endings.cancel(principal, upload_id)

    def begin_patch(
        self, principal: Principal, upload_id: str, offset: int, *, length: int | None, checksum: Checksum | None
    ) -> WritePlan:
        """Lock the upload, check the offset (409 when it is not where the upload stands), open the part.
        Raises ChunkInProgress while another request writes the upload."""
        identity = self.store.identity(principal, upload_id)
        plan = WritePlan(
            row_id=identity.row_id,
            upload_id=upload_id,
            offset=offset,
            limit=0,
            too_large=FileTooLarge("The body goes past the upload's length."),
            runs_file_hash=True,
            hash_body=False,  # the running file hash (or assembly, after a restart) covers these bytes
            partial=identity.concat == "partial",
            user_id=identity.user_id,
        )
        try:
            plan.locks.enter_context(self.locker.hold(identity.row_id, "tus"))
            with self.db.reading() as tx:  # the tus lock keeps other PATCHes out; the record re-checks
                row = tus_store.patch_target(tx.connection(), identity.row_id)
                if row is None:  # purged since it was remembered
                    raise UploadGone("The upload no longer exists.")
                check_alive(row, self.settings.session_timeout)
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
            timeout = self.settings.session_timeout
            if file_size != row.file_size or now - row.last_updated > timeout * TOUCH_AFTER:
                # a new length to keep; or an upload idle long enough that the sweep, which expires
                # an upload by its last change, could end it while this body streams: moved first.
                # Otherwise (the usual PATCH, right after the creation or the PATCH before) the check
                # was a read, which takes no write lock (SQLite) and commits nothing.
                with self.db.session() as tx:
                    tus_store.touch(tx.connection(), identity.row_id, file_size, now, now + timeout)
            end = file_size if file_size is not None else self.max_size
            plan.limit = end - offset
            plan.too_large = FileTooLarge(f"The body goes past the upload's length (at most {plan.limit} more bytes).")
            if offset == 0 and not plan.partial:
                plan.head_check = first_bytes_check(row.filename, row.content_type)
            plan.reserve = file_size if offset == 0 and file_size else None
            plan.file_end = file_size
        except BaseException:
            plan.close()
            raise
        self.writes.open(plan)
        plan.checksum = checksum
        return plan

    def open_sink(self, plan: WritePlan) -> ChunkSink:
        return self.writes.open_sink(plan)

    def finish_patch(self, plan: WritePlan, result: SinkResult) -> TusUpload:
        """Record a whole PATCH body; the one that reaches the length assembles the file.
        Returns the upload as it stands after this PATCH (the one that completes it has the
        file's probe started first, to run beside the record)."""
        early = None
        try:
            checksum = plan.checksum
            if checksum is not None and checksum.hasher.digest() != checksum.digest:
                raise ChecksumMismatch(
                    f"The body's {checksum.algorithm} does not match Upload-Checksum; nothing was kept."
                )
            digest = None
            if plan.completes_file(result.size):
                early = self.store.completion.probe_early(plan.row_id, plan.offset + result.size)
                digest = _file_digest(plan)
            try:
                recorded = self._record(plan, result, digest)
            except BaseException as exc:
                self.abort_patch(plan, exc)
                raise
            return self._after_record(plan, recorded, early)
        finally:
            if early is not None:
                early.close()

    def keep_received(self, plan: WritePlan, result: SinkResult | None) -> None:
        """The body broke off: keep and count every byte that reached the part (none with a
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
        log.info("tus upload %s broke off; kept %d bytes, now at %d", plan.upload_id, result.size, offset)
        self._after_record(plan, recorded)

    def abort_patch(self, plan: WritePlan, error: BaseException | None) -> None:
        """Refused or lost: the offset stays where it was (bytes past it are overwritten later)."""
        self.writes.abort(plan, error)

    def _record(self, plan: WritePlan, result: SinkResult, digest: str | None = None) -> _Recorded:
        """Count the PATCH with the statements built once: one conditional UPDATE ... RETURNING
        (still active and still at this offset, or nothing happens), its chunk row and its progress
        row. ``digest``: the whole file's SHA-256, when this PATCH completes it and it is known."""
        size, now = result.size, utcnow()
        with self.db.session() as tx:
            connection = tx.connection()
            row = tus_store.advance(connection, plan.row_id, plan.offset, size, now)
            if row is None:
                now_at = tx.scalar(select(UploadSession.bytes_received).where(UploadSession.id == plan.row_id))
                raise OffsetMismatch(f"The upload moved on while this PATCH was written (now at {now_at}).")
            if size:
                location = self.parts.location(plan.row_id)
                tus_store.add_chunk(
                    connection, row.session_id, row.chunks_received - 1, size, location, result.sha256, now
                )
                metrics.UPLOAD_BYTES.labels("tus").inc(size)
            complete = row.file_size is not None and row.bytes_received == row.file_size
            status, pending = row.status, None
            if complete and row.concat != "partial":
                status = SessionStatus.ASSEMBLING
                content_hash = digest or row.content_hash
                tus_store.mark_assembling(connection, plan.row_id, content_hash)
                # what assembly needs, from the columns the UPDATE returned (no read of its own)
                pending = Pending(
                    plan.row_id,
                    row.session_id,
                    row.filename,
                    row.content_type,
                    row.file_hash,
                    content_hash,
                    Assembly(row.file_size or 0),
                )
            tus_store.log_progress(connection, row, f"{size} bytes at offset {plan.offset}", now)
            if row.concat != "partial":
                self.records.progress(
                    tx,
                    row.user_id,
                    row.session_id,
                    chunks_received=row.chunks_received,
                    total_chunks=row.chunks_received,
                    bytes_received=row.bytes_received,
                    percentage=progress_percent(row.bytes_received, row.file_size),
                    final=complete,
                )
        return _Recorded(to_upload(row, self.settings.session_timeout, status=status), complete, pending)

    def _after_record(self, plan: WritePlan, recorded: _Recorded, early: ProbeInFlight | None = None) -> TusUpload:
        upload, complete = recorded.upload, recorded.complete
        self.writes.recorded(plan, upload.offset - plan.offset)
        if complete and not plan.partial:
            # already assembling (the recording transaction moved it) and its part exists
            completion = self.store.completion
            if recorded.pending is not None:
                completion.hand_over(recorded.pending)
            done = completion.assemble(plan.row_id, early)
            if done is None:  # failed meanwhile: as it stands now
                with self.db.session() as tx:
                    done = tx.get_one(UploadSession, plan.row_id)
            return to_upload(done, self.settings.session_timeout)  # with its video and content hash
        return upload


def _file_digest(plan: WritePlan) -> str | None:
    """The SHA-256 of the whole file after the PATCH that completes it, when its running hash
    covers every byte (the PATCH extended the frontier); waits for its last block, which the
    assembly right after would wait for too. None otherwise (assembly hashes what is missing)."""
    if plan.frontier_hasher is None:
        return None
    trailing = plan.sink.trailing if plan.sink is not None else None
    if trailing is not None:
        try:
            trailing.result(timeout=TAKE_WAIT_SECONDS)
        except Exception:  # a timeout or a failed update: assembly decides (it hashes the part)
            return None
    return str(plan.frontier_hasher.copy().hexdigest())
