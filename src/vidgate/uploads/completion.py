"""Completion: the received bytes become a stored, validated, deduplicated video, once.

assemble -> validate -> store -> dedup -> queue. :meth:`Completion.assemble` turns the data
of an ``assembling`` session (either protocol) into its file, checks its SHA-256, validates it,
moves it into the blob store and links it to its owner's video; it is safe to run again after
a crash at any point (the cleanup sweep does so for stalled sessions).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, cast

from sqlalchemy import Connection, Row, Table, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite

from vidgate import dedup, metrics
from vidgate.db.models import (
    AnalysisStatus,
    Content,
    SessionStatus,
    UploadChunk,
    UploadSession,
    Video,
    VideoStatus,
    new_id,
    utcnow,
)
from vidgate.errors import FileHashMismatch, VidgateError
from vidgate.events.schema import DuplicateDetected, DuplicateDetectedData, UploadCompleted, UploadCompletedData
from vidgate.hashing import new_sha256
from vidgate.storage.base import BlobStore, RangedFile
from vidgate.uploads.ending import Endings
from vidgate.uploads.layouts import Assembly, layout_of
from vidgate.uploads.records import Records
from vidgate.uploads.step import Step, UploadDeps
from vidgate.validation.pipeline import FileValidator, ProbeInFlight

log = logging.getLogger(__name__)

_MAX_HANDED = 1_000  # hand-overs not taken (a session failed meanwhile) are forgotten past this
# Built once (building ORM statements per call costs more than running them).
_SESSIONS = cast(Table, UploadSession.__table__)
_CHUNKS_IN_ORDER = (
    select(UploadChunk).where(UploadChunk.session_id == bindparam("upload_id")).order_by(UploadChunk.chunk_index)
)
_SET_CONTENT_HASH = (
    update(_SESSIONS)
    .where(_SESSIONS.c.id == bindparam("row_id"))
    .values(content_hash=bindparam("digest"), file_size=bindparam("file_size"), last_updated=bindparam("now"))
)
_CHUNK_ROWS = cast(Table, UploadChunk.__table__)
_CHUNKS_IN_PART = (
    update(_CHUNK_ROWS).where(_CHUNK_ROWS.c.session_id == bindparam("upload_id")).values(storage_path=bindparam("path"))
)
# The completing transaction's statements (see Completion._complete).
_CONTENTS = cast(Table, Content.__table__)
_VIDEOS = cast(Table, Video.__table__)
# the session is read unlocked and written last: locks go content, video, session (as deletion takes them)
_SESSION_ROW = select(_SESSIONS).where(_SESSIONS.c.id == bindparam("row_id"))
_SESSION_COMPLETED = (
    update(_SESSIONS)
    .where(_SESSIONS.c.id == bindparam("row_id"))
    .values(
        video_id=bindparam("video_id"),
        status=bindparam("status"),
        completed_at=bindparam("completed_at"),
        last_updated=bindparam("last_updated"),
        is_duplicate=bindparam("is_duplicate"),
    )
)
_CONTENT_BY_HASH = select(_CONTENTS).where(_CONTENTS.c.content_hash == bindparam("digest")).with_for_update()
_MY_VIDEO = (
    select(_VIDEOS)
    .where(_VIDEOS.c.user_id == bindparam("user_id"), _VIDEOS.c.content_id == bindparam("content_id"))
    .with_for_update()
)
_UPDATE_CONTENT = (
    update(_CONTENTS)
    .where(_CONTENTS.c.id == bindparam("content_id"))
    .values(status=bindparam("status"), analysing_video_id=bindparam("analysing"))
)


def _insert_if_new(dialect: str, table: Table, *unique: str) -> Any:
    """``INSERT ... ON CONFLICT (unique) DO NOTHING RETURNING id``: a row made by a racing
    transaction makes it wait, then return nothing (no savepoint, one round trip)."""
    make_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return make_insert(table).on_conflict_do_nothing(index_elements=list(unique)).returning(table.c.id)


_DIALECTS = ("postgresql", "sqlite")
_INSERT_CONTENT = {dialect: _insert_if_new(dialect, _CONTENTS, "content_hash") for dialect in _DIALECTS}
_INSERT_VIDEO = {dialect: _insert_if_new(dialect, _VIDEOS, "user_id", "content_id") for dialect in _DIALECTS}
#: what dedup.decide (and the hand-over's claim) may change of an existing video
_MUTABLE_VIDEO_COLUMNS = (
    "status",
    "priority",
    "processing_options",
    "queued_at",
    "dispatched_at",
    "error_message",
    "progress",
    "stage",
    "started_at",
    "finished_at",
)
_UPDATE_VIDEO = (
    update(_VIDEOS)
    .where(_VIDEOS.c.id == bindparam("video_id"))
    .values(updated_at=bindparam("now"), **{name: bindparam(f"new_{name}") for name in _MUTABLE_VIDEO_COLUMNS})
)

#: hand-overs to make once the answer is sent (see :func:`deferring`); None: make them at once
_AFTER_ANSWER: ContextVar[list[Callable[[], object]] | None] = ContextVar("vidgate_after_answer", default=None)


@contextlib.contextmanager
def deferring() -> Iterator[list[Callable[[], object]]]:
    """Within the block (and the worker threads it calls, which copy the context), a completed
    upload's hand-over to a queue that would start the job in this process at once is kept in
    the list instead of made: the HTTP edge makes them after its answer, so the job's start does
    not share the CPU with the answer. The claim is committed either way (see
    :meth:`Completion._complete`): a hand-over never made is made again by the dispatcher."""
    later: list[Callable[[], object]] = []
    token = _AFTER_ANSWER.set(later)
    try:
        yield later
    finally:
        _AFTER_ANSWER.reset(token)


def run_all(later: list[Callable[[], object]]) -> None:
    """Make the hand-overs :func:`deferring` kept (each at most once)."""
    while later:
        later.pop(0)()


class Dispatcher(Protocol):
    """Where a completed upload's video goes (:class:`vidgate.processing.service.ProcessingService`)."""

    @property
    def takes_jobs(self) -> bool:
        """Whether this process hands videos to a queue (else the dispatcher of another does)."""
        ...

    @property
    def starts_here(self) -> bool:
        """Whether a job handed over starts in this process at once (the in-process queue)."""
        ...

    def enqueue_claimed(self, video_id: str, priority: int) -> bool:
        """Put a video whose hand-over the caller claimed (and committed) on the queue."""
        ...


@dataclass(frozen=True, slots=True)
class Pending:
    """What assembly needs of an ``assembling`` session, read in one transaction (the one that
    moved it there hands it over; otherwise :meth:`Completion.assemble` reads it)."""

    row_id: str
    upload_id: str
    filename: str
    content_type: str | None
    file_hash: str | None  # the client's claim, checked
    content_hash: str | None  # already known (a rerun after the blob was stored)
    assembly: Assembly


def pending_of(row: UploadSession, assembly: Assembly) -> Pending:
    """The :class:`Pending` of a session row."""
    return Pending(row.id, row.session_id, row.filename, row.content_type, row.file_hash, row.content_hash, assembly)


class Completion(Step):
    def __init__(
        self,
        deps: UploadDeps,
        blobs: BlobStore,
        validator: FileValidator,
        records: Records,
        endings: Endings,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        super().__init__(deps)
        self.blobs = blobs
        self.validator = validator
        self.records = records
        self.endings = endings
        #: where a video that needs processing goes (claimed in the completing transaction)
        self.dispatcher = dispatcher
        self._handed: OrderedDict[str, Pending] = OrderedDict()
        self._handed_lock = threading.Lock()

    def hand_over(self, pending: Pending) -> None:
        """What the transaction that moved a session to ``assembling`` already read of it, for
        the :meth:`assemble` that follows (so assembly does not read it again)."""
        with self._handed_lock:
            self._handed[pending.row_id] = pending
            while len(self._handed) > _MAX_HANDED:
                self._handed.popitem(last=False)

    def probe_early(self, row_id: str, file_size: int) -> ProbeInFlight | None:
        """Start the probe of an upload whose last bytes just arrived, before they are recorded:
        its child parses the file while this thread records it, and :meth:`assemble` takes the
        answer. Only where the part is the finished file already (local parts: assembly adds
        nothing) and holds exactly ``file_size`` bytes; None otherwise. The caller closes it."""
        source = self.parts.file_on_disk(row_id)
        if source is None:
            return None
        try:
            if source.stat().st_size != file_size:
                return None
        except OSError:
            return None
        return self.validator.start_probe(source)

    def assemble(self, row_id: str, early: ProbeInFlight | None = None) -> UploadSession | None:
        """Turn the received data of an ``assembling`` session into a stored, hash-checked file;
        returns the completed session (detached), or None when there was nothing to assemble
        or the session failed. ``early``: the probe :meth:`probe_early` started on it.

        Safe to run again after a crash at any point (cleanup does so for stalled sessions).
        """
        with self._handed_lock:
            pending = self._handed.pop(row_id, None)
        if pending is None:
            with self.db.session() as tx:
                row = tx.get(UploadSession, row_id)
                if row is None or row.status is not SessionStatus.ASSEMBLING:
                    return None
                chunks = tx.scalars(_CHUNKS_IN_ORDER, {"upload_id": row.session_id}).all()
                pending = pending_of(row, layout_of(row).assembly(row, chunks, self.parts.location(row_id)))
        assembly = pending.assembly
        file_size = assembly.file_size
        if not self.parts.exists(row_id):
            if pending.content_hash and self.blobs.exists(pending.content_hash):
                return self._complete(row_id, pending.content_hash, file_size, {})
            self.endings.fail(row_id, "assembly_failed", "The received data was lost before it could be assembled.")
            return None
        if assembly.incomplete:
            self.endings.fail(row_id, "assembly_failed", assembly.incomplete)
            return None
        single_hash = assembly.known_hash
        if single_hash:  # a single chunk's own hash is the file's: nothing to read
            hasher, upto = new_sha256(), file_size
        else:  # continue the running hash from where in-order bytes left it; read only the rest
            hasher, upto = self.frontier.take(row_id)
            if upto > file_size:
                hasher, upto = new_sha256(), 0
        started = time.perf_counter()
        # every byte received hashed already (the usual tus upload): a remote part store need not
        # assemble a content it holds already (S3: no CompleteMultipartUpload, no copy)
        known = single_hash or (str(hasher.copy().hexdigest()) if upto == file_size else None)
        if known is not None and self.parts.adopt(row_id, known, file_size, self.blobs):
            digest = known
        else:
            self.parts.assemble(row_id, assembly.staged, file_size, hasher, upto, fsync=self.settings.upload.fsync)
            digest = single_hash or str(hasher.hexdigest())
        steps = {"assembly": time.perf_counter() - started}
        if pending.file_hash is not None and digest != pending.file_hash:
            message = f"The file's SHA-256 is {digest}, not the file_hash {pending.file_hash} the client sent."
            self.endings.fail(row_id, FileHashMismatch.code, message)
            raise FileHashMismatch(message, session_id=pending.upload_id)
        return self._validate_and_store(pending, self.parts.assembled(row_id), digest, steps, early)

    def _validate_and_store(
        self,
        pending: Pending,
        source: Path | RangedFile,
        digest: str,
        steps: dict[str, float] | None = None,
        early: ProbeInFlight | None = None,
    ) -> UploadSession:
        """The common end of every protocol: validate the whole file, move it to its blob, link the video."""
        row_id, upload_id, file_size = pending.row_id, pending.upload_id, pending.assembly.file_size
        steps = dict(steps or {})
        started = time.perf_counter()
        try:
            extension = pending.filename.rpartition(".")[2].lower()
            info = self.validator.validate(source, extension, pending.content_type, early)
        except VidgateError as exc:
            if exc.fails_session:
                self.endings.fail(row_id, exc.code, exc.message)
            raise  # anything else (the scanner is down): the session stays assembling, retried later
        steps["validation"] = time.perf_counter() - started
        log.info("upload %s validated: %s", upload_id, info.model_dump(exclude_none=True))
        # The hash is committed before put_file: a delete of the last video of this content
        # looks for assembling sessions of the same SHA-256 (library/deletion.py). A one-chunk
        # upload's record committed it already (the chunk's hash is the file's).
        if pending.content_hash != digest or pending.assembly.staged:
            with self.db.session() as tx:
                values = {"row_id": row_id, "digest": digest, "file_size": file_size, "now": utcnow()}
                tx.execute(_SET_CONTENT_HASH, values)
                if pending.assembly.staged:  # the staged chunks are in the part now
                    tx.execute(_CHUNKS_IN_PART, {"upload_id": upload_id, "path": self.parts.location(row_id)})
        started = time.perf_counter()
        self.parts.store(row_id, digest, self.blobs)
        steps["storing"] = time.perf_counter() - started
        return self._complete(row_id, digest, file_size, info.model_dump(exclude_none=True), steps)

    def _complete(
        self,
        row_id: str,
        digest: str,
        file_size: int,
        media_info: dict[str, Any],
        steps: dict[str, float] | None = None,
    ) -> UploadSession:
        """Link the session to its owner's video of this content (made now if the owner has none)
        and queue processing unless the answer is already known (see :mod:`vidgate.dedup`).
        Returns the completed session (detached: what the caller answers with).

        One transaction of statements built once (the ORM's per-call statement building and
        flush cost more than running them). It also claims the hand-over to the queue
        (``dispatched_at``), as :meth:`ProcessingService.dispatch` would in a transaction of its
        own; the job is put on the queue after the commit (for the in-process queue, after the
        answer: :func:`deferring`). A crash in between leaves a claimed, queued video: the
        dispatcher's timeout offers it again (the in-process queue's start-up, at once)."""
        dispatcher = self.dispatcher
        hands_over = dispatcher is not None and dispatcher.takes_jobs
        with self.db.session() as tx:
            connection = tx.connection()
            dialect = "postgresql" if connection.dialect.name == "postgresql" else "sqlite"
            session = connection.execute(_SESSION_ROW, {"row_id": row_id}).one()
            now = utcnow()
            content, content_is_new = _content_for(connection, dialect, digest, file_size, media_info, now)
            video, video_is_new = _video_for(connection, session, content, content_is_new, now)
            before = _video_state(video), (content.status, content.analysing_video_id)
            decision = dedup.decide(
                content,
                video,
                content_is_new=content_is_new,
                video_is_new=video_is_new,
                scope=self.settings.upload.dedup_scope,
                enabled=self.settings.upload.enable_deduplication,
                priority=session.priority,
                options=session.upload_options,
                now=now,
            )
            claimed = decision.queue_job and hands_over
            if claimed:  # the hand-over's claim, committed with the video it hands over
                video.dispatched_at = now
            if video_is_new:
                if connection.execute(_INSERT_VIDEO[dialect], _video_values(video)).first() is None:
                    raise RuntimeError(f"video of {session.user_id} for content {content.id} appeared unlocked")
            elif _video_state(video) != before[0]:
                connection.execute(_UPDATE_VIDEO, {"video_id": video.id, "now": now, **_video_changes(video)})
            if not content_is_new and (content.status, content.analysing_video_id) != before[1]:
                connection.execute(
                    _UPDATE_CONTENT,
                    {"content_id": content.id, "status": content.status, "analysing": content.analysing_video_id},
                )
            completed = {
                "video_id": video.id,
                "status": SessionStatus.COMPLETED,
                "completed_at": now,
                "last_updated": now,
                "is_duplicate": decision.duplicate,
            }
            connection.execute(_SESSION_COMPLETED, {"row_id": row_id, **completed})
            row = UploadSession(**{**session._mapping, **completed})
            event = "duplicate_detected" if decision.duplicate else "upload_completed"
            self.records.log_now(connection, row, event, f"stored as {digest}", now)
            video_id, upload_id, user_id, priority = video.id, row.session_id, row.user_id, video.priority
            content_id, reused = content.id, not content_is_new
            protocol, took = row.protocol, (now - row.created_at).total_seconds()
            events = self.records.events
            if events is not None:
                events.to_user(
                    UploadCompleted(
                        session_id=upload_id,
                        video_id=video_id,
                        data=UploadCompletedData(video_id=video_id, content_hash=digest, file_size=file_size),
                    ),
                    user_id,
                    tx,
                )
                if decision.duplicate:
                    events.to_user(
                        DuplicateDetected(
                            session_id=upload_id,
                            video_id=video_id,
                            data=DuplicateDetectedData(
                                video_id=video_id,
                                content_hash=digest,
                                cached_result=events.result_lookup(video_id, tx)
                                if self.settings.upload.enable_deduplication
                                else None,
                            ),
                        ),
                        user_id,
                        tx,
                    )
        metrics.UPLOADS.labels(protocol, "duplicate" if decision.duplicate else "completed").inc()
        metrics.UPLOAD_DURATION.labels(protocol).observe(took)
        metrics.DEDUP_LOOKUPS.inc()
        if decision.duplicate:
            metrics.DEDUP_HITS.inc()
        self.parts.remove(row_id, later=True)  # the session is completed: its answer need not wait
        log.info(
            "upload %s completed: video %s, sha256 %s, %d bytes%s%s",
            upload_id,
            video_id,
            digest,
            file_size,
            " (known content)" if decision.duplicate else (" (stored content reused)" if reused else ""),
            " (" + ", ".join(f"{step} {seconds:.2f} s" for step, seconds in steps.items()) + ")" if steps else "",
            extra={
                "session_id": upload_id,
                "video_id": video_id,
                "content_id": content_id,
                "event": event,
                "content_hash": digest,
            },
        )
        if claimed and dispatcher is not None:
            hand_over = functools.partial(dispatcher.enqueue_claimed, video_id, priority)
            later = _AFTER_ANSWER.get()
            if later is not None and dispatcher.starts_here:
                later.append(hand_over)  # the job would start now, in this process: after the answer
            else:
                hand_over()
        return row


def _video_state(video: Video) -> tuple[Any, ...]:
    return tuple(getattr(video, name) for name in _MUTABLE_VIDEO_COLUMNS)


def _video_changes(video: Video) -> dict[str, Any]:
    return {f"new_{name}": getattr(video, name) for name in _MUTABLE_VIDEO_COLUMNS}


def _video_values(video: Video) -> dict[str, Any]:
    return {column.key: getattr(video, column.key) for column in _VIDEOS.columns}


def _content_for(
    connection: Connection, dialect: str, digest: str, file_size: int, media_info: dict[str, Any], now: datetime
) -> tuple[Content, bool]:
    """The content row of ``digest``, locked (detached); made if new. The insert comes first
    (most uploads are new content: one statement, not a read and an insert); a row that exists,
    or a racing upload's new one (the insert waits on the unique index, then does nothing), is
    read instead, locked."""
    values = {
        "id": new_id(),
        "content_hash": digest,
        "file_size": file_size,
        "storage_key": digest,
        "media_info": media_info,
        "status": AnalysisStatus.PENDING,
        "analysing_video_id": None,
        "analyses": 0,
        "error_message": None,
        "fingerprint": None,
        "created_at": now,
        "started_at": None,
        "finished_at": None,
    }
    if connection.execute(_INSERT_CONTENT[dialect], values).first() is not None:
        return Content(**values), True
    found = connection.execute(_CONTENT_BY_HASH, {"digest": digest}).one()
    return Content(**found._mapping), False


def _video_for(
    connection: Connection, session: Row[Any], content: Content, content_is_new: bool, now: datetime
) -> tuple[Video, bool]:
    """The owner's video of ``content``, locked (detached); a new one (not yet inserted) if they
    have none (a new content has none). Every writer of an owner's video locks its content first, so none can appear
    between this read and the insert."""
    if not content_is_new:
        found = connection.execute(_MY_VIDEO, {"user_id": session.user_id, "content_id": content.id}).one_or_none()
        if found is not None:
            return Video(**found._mapping), False
    video = Video(
        id=new_id(),
        user_id=session.user_id,
        content_id=content.id,
        filename=session.filename,
        content_type=session.content_type,
        status=VideoStatus.UPLOADED,
        priority=session.priority,
        error_message=None,
        processing_options=dict(session.upload_options or {}),
        stage=None,
        progress=0.0,
        attempts=0,
        created_at=now,
        updated_at=now,
        queued_at=None,
        dispatched_at=None,
        started_at=None,
        finished_at=None,
        lease_holder=None,
        lease_pid=None,
        lease_expires_at=None,
    )
    return video, True
