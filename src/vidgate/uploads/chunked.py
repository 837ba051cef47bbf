"""The seed API's chunked upload: begin a chunk, stream it, record it (the last one completes).

A chunk goes through :meth:`ChunkedUploads.begin_chunk` (plan it, lock it, open its target),
:meth:`ChunkedUploads.open_sink` (the caller streams the bytes into it) and
:meth:`ChunkedUploads.finish_chunk` (records the chunk; the last one assembles the file).
:meth:`ChunkedUploads.abort_chunk` undoes a chunk that broke off: it leaves no row, so the
chunk simply counts as missing and the client sends it again.
"""

from __future__ import annotations

import functools
import threading
from typing import cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from vidgate import metrics
from vidgate.auth import Principal
from vidgate.db.models import SessionStatus, UploadChunk, UploadSession, new_id, utcnow
from vidgate.errors import (
    ChunkConflict,
    ChunkSizeMismatch,
    EmptyChunk,
    FileTooLarge,
    InvalidParameter,
    SessionNotActive,
    SessionNotFound,
)
from vidgate.uploads.chunk_plan import ChunkPlanner
from vidgate.uploads.completion import Completion, Pending, pending_of
from vidgate.uploads.ending import Endings
from vidgate.uploads.layouts import layout_of
from vidgate.uploads.models import ChunkReceipt, ChunkRequest, SessionView
from vidgate.uploads.records import Records, received, to_view
from vidgate.uploads.step import Step, UploadDeps
from vidgate.uploads.writer import ChunkSink, SinkResult
from vidgate.uploads.writing import WriteMode, WritePath, WritePlan
from vidgate.validation.pipeline import ProbeInFlight

# Built once: building ORM statements per call costs more than running them (tus_store.py).
_SESSIONS = cast(Table, UploadSession.__table__)
_SESSION_ROW = select(_SESSIONS).where(_SESSIONS.c.id == bindparam("row_id")).with_for_update()
_RECORDED = (
    update(_SESSIONS)
    .where(_SESSIONS.c.id == bindparam("row_id"))
    .values(
        chunk_size=bindparam("chunk_size"),
        chunks_received=bindparam("chunks_received"),
        bytes_received=bindparam("bytes_received"),
        last_updated=bindparam("last_updated"),
        status=bindparam("status"),
        file_size=bindparam("file_size"),
        content_hash=bindparam("content_hash"),
    )
)
_INSERT_CHUNK = insert(cast(Table, UploadChunk.__table__))
_CHUNK_SIZES = select(UploadChunk.chunk_index, UploadChunk.chunk_size).where(
    UploadChunk.session_id == bindparam("upload_id")
)
_CHUNKS_IN_ORDER = (
    select(UploadChunk).where(UploadChunk.session_id == bindparam("upload_id")).order_by(UploadChunk.chunk_index)
)
_ANY_CHUNK = select(UploadChunk.id).where(UploadChunk.session_id == bindparam("upload_id")).limit(1)


class ChunkedUploads(Step):
    def __init__(
        self, deps: UploadDeps, writes: WritePath, records: Records, completion: Completion, endings: Endings
    ) -> None:
        super().__init__(deps)
        self.writes = writes
        self.records = records
        self.completion = completion
        self.endings = endings
        self.planner = ChunkPlanner(deps, records)

    def begin_chunk(self, principal: Principal, request: ChunkRequest) -> WritePlan:
        """Check the request, create or find its session, lock the chunk and open its target."""
        plan = self.planner.plan(principal, request)
        self.writes.open(plan)
        return plan

    def open_sink(self, plan: WritePlan) -> ChunkSink:
        return self.writes.open_sink(plan)

    def abort_chunk(self, plan: WritePlan, error: BaseException | None = None) -> None:
        """The chunk broke off or was refused: keep no trace of it, so it counts as missing."""
        failed = self.writes.abort(plan, error)
        if not failed and plan.mode is WriteMode.DIRECT and not self._has_chunks(plan.upload_id):
            self.parts.remove(plan.row_id)  # nothing acknowledged lives in it yet

    def _has_chunks(self, upload_id: str) -> bool:
        with self.db.session() as tx:
            return tx.scalar(_ANY_CHUNK, {"upload_id": upload_id}) is not None

    def finish_chunk(self, plan: WritePlan, result: SinkResult) -> ChunkReceipt:
        """Record a fully received chunk; when it is the last one, assemble the file (a file in
        one chunk has its probe started first, to run beside the record)."""
        early = self.completion.probe_early(plan.row_id, result.size) if plan.completes_file(result.size) else None
        try:
            return self._finish(plan, result, early)
        finally:
            if early is not None:
                early.close()

    def _finish(self, plan: WritePlan, result: SinkResult, early: ProbeInFlight | None) -> ChunkReceipt:
        try:
            receipt, pending = self._record(plan, result)
        except BaseException as exc:
            self.abort_chunk(plan, exc)
            raise
        complete = pending is not None
        self.writes.recorded(plan, result.size)
        if (
            plan.mode is WriteMode.DIRECT
            and plan.total_chunks > 1
            and not receipt.duplicate_chunk
            and not complete
            and self.frontier.stored(plan.row_id, plan.offset, result.size)
        ):  # chunks that came ahead of the frontier: hash them now, while others still arrive
            read = functools.partial(self.parts.hash_range, plan.row_id)
            threading.Thread(
                target=self.frontier.catch_up, args=(plan.row_id, read), name="hash-catch-up", daemon=True
            ).start()
        if pending is not None:
            self.completion.hand_over(pending)
            row = self.completion.assemble(plan.row_id, early)
            view = (
                self.records.view(plan.upload_id) if row is None else to_view(row, set(), self.settings.session_timeout)
            )
            return receipt.model_copy(update=view.model_dump())
        return receipt

    def get_session(self, principal: Principal, upload_id: str) -> SessionView:
        return self.records.view(upload_id, owner=principal.user_id)

    def cancel_session(self, principal: Principal, upload_id: str) -> SessionView:
        return self.endings.cancel(principal, upload_id)

    def _receipt(
        self,
        tx: Session,
        row: UploadSession,
        plan: WritePlan,
        result: SinkResult,
        *,
        duplicate: bool,
        chunks: set[int] | None = None,
    ) -> ChunkReceipt:
        if chunks is None:
            chunks = received(tx, row.session_id)
        return ChunkReceipt(
            **to_view(row, chunks, self.settings.session_timeout).model_dump(),
            chunk_index=plan.chunk_index,
            chunk_hash=result.sha256,
            chunk_bytes=result.size,
            duplicate_chunk=duplicate,
        )

    def _record(self, plan: WritePlan, result: SinkResult) -> tuple[ChunkReceipt, Pending | None]:
        """Record the chunk; with the upload's last chunk, also what its assembly needs. Statements
        built once, on the transaction's connection (the ORM's load, add and flush cost more)."""
        with self.db.session() as tx:
            connection = tx.connection()
            found = connection.execute(_SESSION_ROW, {"row_id": plan.row_id}).one_or_none()
            if found is None:
                raise SessionNotFound(f"No upload session {plan.upload_id!r}.")
            row = UploadSession(**found._mapping)  # detached: read below, written by _RECORDED
            if plan.mode is WriteMode.VERIFY:
                if result.sha256 != plan.existing_hash:
                    raise ChunkConflict(
                        f"Chunk {plan.chunk_index} was already received with different bytes; "
                        "a received chunk cannot be replaced."
                    )
                return self._receipt(tx, row, plan, result, duplicate=True), None
            if row.status is not SessionStatus.ACTIVE:
                raise SessionNotActive(f"Upload session {row.session_id!r} is {row.status.value}.")
            self._check_chunk_size(tx, row, plan, result.size)
            now = utcnow()
            chunk = {
                "id": new_id(),
                "session_id": row.session_id,
                "chunk_index": plan.chunk_index,
                "chunk_size": result.size,
                "chunk_hash": result.sha256,
                "storage_path": plan.location,
                "received": True,
                "verified": True,
                "received_at": now,
                "verified_at": now,
            }
            connection.execute(_INSERT_CHUNK, chunk)
            if plan.mode is WriteMode.DIRECT and plan.chunk_index == 0 and row.total_chunks > 1 and not row.chunk_size:
                row.chunk_size = result.size
                if (row.total_chunks - 1) * result.size >= self.limits.max_file_size:
                    raise FileTooLarge(
                        f"{row.total_chunks} chunks of {result.size} bytes exceed the limit of "
                        f"{self.limits.max_file_size} bytes."
                    )
            if row.total_chunks == 1:  # a whole file: this chunk is all there is
                sizes = {plan.chunk_index: result.size}
            else:
                sizes = {index: size for index, size in connection.execute(_CHUNK_SIZES, {"upload_id": row.session_id})}
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
            complete, pending = count == row.total_chunks, None
            if complete:
                row.status = SessionStatus.ASSEMBLING
                if row.total_chunks == 1:  # the chunk's hash is the file's: committed before put_file
                    row.content_hash, row.file_size = result.sha256, result.size
                # what assembly needs, read here rather than in a transaction of its own
                chunks = (
                    [UploadChunk(**chunk)]
                    if row.total_chunks == 1
                    else tx.scalars(_CHUNKS_IN_ORDER, {"upload_id": row.session_id}).all()
                )
                assembly = layout_of(row).assembly(row, chunks, self.parts.location(plan.row_id))
                pending = pending_of(row, assembly)
            connection.execute(
                _RECORDED,
                {
                    "row_id": plan.row_id,
                    "chunk_size": row.chunk_size,
                    "chunks_received": count,
                    "bytes_received": total_bytes,
                    "last_updated": now,
                    "status": row.status,
                    "file_size": row.file_size,
                    "content_hash": row.content_hash,
                },
            )
            self.records.log_now(connection, row, "upload_progress", f"chunk {plan.chunk_index} received", now)
            receipt = self._receipt(tx, row, plan, result, duplicate=False, chunks=set(sizes))
            self.records.progress(
                tx,
                row.user_id,
                row.session_id,
                chunks_received=receipt.chunks_received,
                total_chunks=receipt.total_chunks,
                bytes_received=receipt.bytes_received,
                percentage=receipt.progress_percentage,
                final=complete,
            )
            return receipt, pending

    def _check_chunk_size(self, tx: Session, row: UploadSession, plan: WritePlan, size: int) -> None:
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
            sizes = tx.execute(_CHUNK_SIZES, {"upload_id": row.session_id}).all()
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
