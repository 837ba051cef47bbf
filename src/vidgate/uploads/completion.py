"""Completion: the received bytes become a stored, validated, deduplicated video, once.

assemble -> validate -> store -> dedup -> queue. :meth:`Completion.assemble` turns the data
of an ``assembling`` session (either protocol) into its file, checks its SHA-256, validates it,
moves it into the blob store and links it to its owner's video; it is safe to run again after
a crash at any point (the cleanup sweep does so for stalled sessions).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vidgate import dedup, metrics
from vidgate.db.models import (
    AnalysisStatus,
    Content,
    SessionStatus,
    UploadChunk,
    UploadSession,
    Video,
    VideoStatus,
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
from vidgate.validation.pipeline import FileValidator

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
        on_video_queued: Callable[[str], object] | None = None,
    ) -> None:
        super().__init__(deps)
        self.blobs = blobs
        self.validator = validator
        self.records = records
        self.endings = endings
        #: called after commit with the id of a video that needs processing
        self.on_video_queued = on_video_queued
        self._handed: OrderedDict[str, Pending] = OrderedDict()
        self._handed_lock = threading.Lock()

    def hand_over(self, pending: Pending) -> None:
        """What the transaction that moved a session to ``assembling`` already read of it, for
        the :meth:`assemble` that follows (so assembly does not read it again)."""
        with self._handed_lock:
            self._handed[pending.row_id] = pending
            while len(self._handed) > _MAX_HANDED:
                self._handed.popitem(last=False)

    def assemble(self, row_id: str) -> UploadSession | None:
        """Turn the received data of an ``assembling`` session into a stored, hash-checked file;
        returns the completed session (detached), or None when there was nothing to assemble
        or the session failed.

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
        return self._validate_and_store(pending, self.parts.assembled(row_id), digest, steps)

    def _validate_and_store(
        self, pending: Pending, source: Path | RangedFile, digest: str, steps: dict[str, float] | None = None
    ) -> UploadSession:
        """The common end of every protocol: validate the whole file, move it to its blob, link the video."""
        row_id, upload_id, file_size = pending.row_id, pending.upload_id, pending.assembly.file_size
        steps = dict(steps or {})
        started = time.perf_counter()
        try:
            info = self.validator.validate(source, pending.filename.rpartition(".")[2].lower(), pending.content_type)
        except VidgateError as exc:
            if exc.fails_session:
                self.endings.fail(row_id, exc.code, exc.message)
            raise  # anything else (the scanner is down): the session stays assembling, retried later
        steps["validation"] = time.perf_counter() - started
        log.info("upload %s validated: %s", upload_id, info.model_dump(exclude_none=True))
        # The hash is committed before put_file: a delete of the last video of this content
        # looks for assembling sessions of the same SHA-256 (library/deletion.py).
        with self.db.session() as tx:
            tx.execute(_SET_CONTENT_HASH, {"row_id": row_id, "digest": digest, "file_size": file_size, "now": utcnow()})
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
        Returns the completed session (detached: what the caller answers with)."""
        with self.db.session() as tx:
            row = tx.get_one(UploadSession, row_id)
            now = utcnow()
            content, content_is_new = self._content_for(tx, digest, file_size, media_info, now)
            video, video_is_new = self._video_for(tx, row, content, now)
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
            self.records.log(tx, row, event, f"stored as {digest}")
            video_id, upload_id, user_id = video.id, row.session_id, row.user_id
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
        self.locker.release_all(row_id)
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
        if decision.queue_job and self.on_video_queued is not None:
            self.on_video_queued(video_id)
        return row

    @staticmethod
    def _content_for(
        tx: Session, digest: str, file_size: int, media_info: dict[str, Any], now: datetime
    ) -> tuple[Content, bool]:
        """The content row of ``digest``, locked; made if new (a racing upload's row is read instead)."""
        content = tx.scalar(select(Content).where(Content.content_hash == digest).with_for_update())
        if content is not None:
            return content, False
        try:
            with tx.begin_nested():
                content = Content(
                    content_hash=digest,
                    file_size=file_size,
                    storage_key=digest,
                    media_info=media_info,
                    status=AnalysisStatus.PENDING,
                    created_at=now,
                )
                tx.add(content)
            return content, True
        except IntegrityError:
            return tx.scalars(select(Content).where(Content.content_hash == digest).with_for_update()).one(), False

    @staticmethod
    def _video_for(tx: Session, row: UploadSession, content: Content, now: datetime) -> tuple[Video, bool]:
        """The owner's video of ``content``, locked; made from this upload if they have none."""
        mine = select(Video).where(Video.user_id == row.user_id, Video.content_id == content.id).with_for_update()
        video = tx.scalar(mine)
        if video is not None:
            return video, False
        try:
            with tx.begin_nested():
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
                tx.add(video)
            return video, True
        except IntegrityError:  # the same owner's other upload of these bytes made it a moment ago
            return tx.scalars(mine).one(), False
