"""Deleting a video: the owner's record always, the shared bytes only with their last owner.

Every owner of the same bytes has a ``video`` row over one ``content`` row (one per SHA-256);
the blob and the derived pictures are the content's. :meth:`VideoDeleter.delete` removes one
owner's video (its reviews go with it, by the foreign keys) and, when no video references the
content any more, the content row (its analysis and frame hashes go with it) and its files.

Reference counting is the ``video`` rows themselves, counted under the content row's lock:
upload completion, the processing jobs and this module all lock the content row before any
video row, so two owners deleting at once, or a delete beside an upload that dedups onto the
content, are serialised by that lock (SQLite: by ``BEGIN IMMEDIATE``). Whoever counts last
sees every other owner's video, or none.

One step of an upload is outside that lock: it moves its file into the blob store
(``put_file``, which keeps the stored copy when one exists) *before* it locks the content row
to link its video. An upload whose bytes the store kept that way must not lose them to a
delete that then removes the blob. So the last owner's delete, holding the content lock:

1. withdraws the blob (renames it aside): from now on, ``put_file`` of the same bytes stores
   its own copy;
2. then asks whether any upload of these bytes is assembling (its ``content_hash`` is recorded,
   committed, before its ``put_file``): one whose ``put_file`` ran before step 1 is seen here;
3. if one is, puts the blob back and keeps the content row (that upload links it in a moment;
   if it never does, :meth:`VideoDeleter.sweep` removes it later); otherwise deletes the row;
4. after the commit, removes the withdrawn blob and the derived files.

A crash before the commit leaves the blob withdrawn and its content row in place: the sweep
restores it. A crash after the commit leaves a withdrawn blob without a row: the sweep removes
it and the derived files. Pictures left without a content row any other way (by versions
that put them outside the content's lock) are found by listing the derived files
(:meth:`VideoDeleter.sweep_stray_pictures`). A running job of the deleted video stops at its
next progress report or lease renewal (its video is gone: it stores nothing); if other
owners' videos were waiting for that job's analysis, one of them is queued to analyse it
instead. A job past its last report puts its pictures into the blob store only inside its
result's transaction, after locking the content row and checking its lease
(``ProcessingService._store``): a delete that came first leaves it no content (it puts
nothing), one that comes while that transaction is open waits for the lock and then removes
the pictures with the rest. So no derived file outlives its content, in any order.

The answer and the ``video_deleted`` event never say whether the bytes went too: that would
tell the caller whether another account holds the same file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field
from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vidgate.db.engine import Database
from vidgate.db.models import (
    AnalysisStatus,
    Content,
    SessionStatus,
    UploadSession,
    Video,
    VideoStatus,
    utcnow,
)
from vidgate.errors import VideoNotFound
from vidgate.events.publisher import EventPublisher
from vidgate.events.schema import VideoDeleted, VideoDeletedData
from vidgate.library.owners import owned_by
from vidgate.storage import BlobStore

if TYPE_CHECKING:
    from vidgate.wiring import Services

log = logging.getLogger(__name__)

#: A withdrawn blob younger than this may belong to a delete still in its transaction: the
#: sweep leaves it alone (it would wait on the content lock anyway; this saves the wait).
WITHDRAWN_GRACE_SECONDS = 60.0
#: A content row with no video may be an upload linking its video right now: swept only after this.
ORPHAN_GRACE_SECONDS = 600.0
#: Content hashes whose rows are looked up in one query by :meth:`VideoDeleter.sweep_stray_pictures`.
STRAY_BATCH = 500


class DeletedVideo(BaseModel):
    """What ``DELETE /v1/videos/{id}`` answers: the caller's record is gone."""

    video_id: str
    filename: str | None
    content_hash: str
    deleted_at: datetime
    reason: str = Field(description="request (a DELETE) or retention (RETENTION_DAYS).")


@dataclass
class _Outcome:
    view: DeletedVideo
    user_id: str
    content_hash: str
    storage_key: str
    content_removed: bool
    requeued: list[str] = field(default_factory=list)


@dataclass
class SweepReport:
    """What one :meth:`VideoDeleter.sweep` finished."""

    restored_blobs: int = 0
    purged_blobs: int = 0
    orphan_contents_removed: int = 0
    stray_pictures_removed: int = 0  # contents whose derived files outlived their row


class _KeepRow(Exception):
    """Rolls back the placeholder row of :meth:`VideoDeleter._remove_stray_pictures`."""


class VideoDeleter:
    """The one delete path: ``DELETE /v1/videos/{id}`` and the retention sweep both call it."""

    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        events: EventPublisher | None = None,
        dispatch: Callable[[str], object] | None = None,
        derived_grace_seconds: float = 3600.0,
    ) -> None:
        self.db = db
        self.blobs = blobs
        self.events = events
        #: LIBRARY_DERIVED_GRACE_SECONDS: stray pictures younger than this are left to a later sweep
        self.derived_grace_seconds = derived_grace_seconds
        #: hands a queued video to the broker (ProcessingService.dispatch); without it the
        #: periodic dispatcher picks a requeued waiter up
        self.dispatch = dispatch

    def delete(
        self, user_id: str, video_id: str, *, key_id: str | None = None, reason: str = "request"
    ) -> DeletedVideo:
        """Delete ``user_id``'s video ``video_id`` (:class:`VideoNotFound` if it is not theirs)."""
        with self.db.session() as session:
            outcome = self._delete_in(session, user_id, video_id, key_id=key_id, reason=reason)
        self._after_commit(outcome)
        return outcome.view

    def _delete_in(self, session: Session, user_id: str, video_id: str, *, key_id: str | None, reason: str) -> _Outcome:
        content_id = session.scalar(select(Video.content_id).where(Video.id == video_id, owned_by(user_id)))
        if content_id is None:
            raise VideoNotFound(f"No video {video_id!r}.")
        # The content first, then the video: the order uploads and jobs take them in.
        content = session.get(Content, content_id, with_for_update=True, populate_existing=True)
        video = session.scalar(
            select(Video)
            .where(Video.id == video_id, owned_by(user_id))
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if content is None or video is None:  # deleted by a concurrent request meanwhile
            raise VideoNotFound(f"No video {video_id!r}.")
        now = utcnow()
        view = DeletedVideo(
            video_id=video.id, filename=video.filename, content_hash=content.content_hash, deleted_at=now, reason=reason
        )
        requeued = self._hand_on_analysis(session, content, video, now)
        # Sessions keep their history; only the link to the video goes.
        session.execute(update(UploadSession).where(UploadSession.video_id == video.id).values(video_id=None))
        session.execute(delete(Video).where(Video.id == video.id))  # reviews: ON DELETE CASCADE
        if self.events is not None:
            self.events.to_user(
                VideoDeleted(
                    video_id=video.id,
                    data=VideoDeletedData(
                        reason="retention" if reason == "retention" else "request",
                        filename=video.filename,
                        content_hash=content.content_hash,
                        key_id=key_id,
                        deleted_at=now,
                    ),
                ),
                user_id,
                session,
            )
        removed = False
        if not self._referenced(session, content.id):
            removed = self._remove_content(session, content)
        return _Outcome(view, user_id, content.content_hash, content.storage_key, removed, requeued)

    @staticmethod
    def _referenced(session: Session, content_id: str) -> bool:
        return bool(session.scalar(select(func.count()).select_from(Video).where(Video.content_id == content_id)))

    @staticmethod
    def _hand_on_analysis(session: Session, content: Content, video: Video, now: datetime) -> list[str]:
        """If the deleted video's job is analysing the content, the claim goes: another owner's
        video waiting for that analysis (processing, no lease of its own) is queued to run it
        (the others keep waiting; its job completes them all)."""
        if content.analysing_video_id != video.id:
            return []
        content.status, content.analysing_video_id = AnalysisStatus.PENDING, None
        waiter = session.scalar(
            select(Video.id)
            .where(Video.content_id == content.id, Video.id != video.id, Video.status == VideoStatus.PROCESSING)
            .order_by(Video.priority.desc(), Video.created_at)
            .limit(1)
        )
        if waiter is None:
            return []
        session.execute(
            update(Video)
            .where(Video.id == waiter)
            .values(status=VideoStatus.QUEUED, queued_at=now, dispatched_at=None, lease_expires_at=None)
        )
        return [waiter]

    def _remove_content(self, session: Session, content: Content) -> bool:
        """Steps 1-3 of the module's protocol; True if the row went (the files go after the commit)."""
        withdrawn = self.blobs.withdraw(content.storage_key)
        if _upload_in_flight(session, content.content_hash):
            if withdrawn:
                self.blobs.restore(content.storage_key)
            log.info(
                "content %s kept: an upload of the same bytes is completing",
                content.id,
                extra={"content_id": content.id, "event": "content_kept"},
            )
            return False
        session.execute(delete(Content).where(Content.id == content.id))  # analysis, frame hashes: CASCADE
        return True

    def _after_commit(self, outcome: _Outcome) -> None:
        if outcome.content_removed:
            self._purge(outcome.storage_key, outcome.content_hash)
        for video_id in outcome.requeued:
            if self.dispatch is not None:
                self.dispatch(video_id)
        log.info(
            "video %s deleted (%s)%s",
            outcome.view.video_id,
            outcome.view.reason,
            "; its content's files were removed" if outcome.content_removed else "",
            extra={"video_id": outcome.view.video_id, "event": "video_deleted"},
        )

    def _purge(self, storage_key: str, content_hash: str) -> None:
        self.blobs.delete_derived(content_hash)
        self.blobs.purge_withdrawn(storage_key)

    # ------------------------------------------------------------------ the sweep
    def sweep(self, now: datetime | None = None) -> SweepReport:
        """Finish deletes a crash interrupted, and remove contents no video references (an upload
        that kept one and then never linked it). Run with the periodic cleanup."""
        now = now or utcnow()
        report = SweepReport()
        cutoff = now.timestamp() - WITHDRAWN_GRACE_SECONDS
        for key, withdrawn_at in list(self.blobs.withdrawn()):
            if withdrawn_at > cutoff:
                continue
            with self.db.session() as session:
                # Under the content's lock: a delete still in its transaction is waited for.
                row = session.scalar(select(Content).where(Content.storage_key == key).with_for_update())
                if row is not None:
                    self.blobs.restore(key)  # its delete rolled back: the content is still in use
                    report.restored_blobs += 1
                    continue
            self._purge(key, key)  # a blob's key is its SHA-256
            report.purged_blobs += 1
        orphans = select(Content.id).where(
            ~exists(select(Video.id).where(Video.content_id == Content.id)),
            Content.created_at < now - timedelta(seconds=ORPHAN_GRACE_SECONDS),
        )
        with self.db.session() as session:
            candidates = session.scalars(orphans.limit(500)).all()
        for content_id in candidates:
            if self._remove_orphan(content_id):
                report.orphan_contents_removed += 1
        report.stray_pictures_removed = self.sweep_stray_pictures(now)
        if report.restored_blobs or report.purged_blobs or report.orphan_contents_removed:
            log.info("library sweep: %s", report)
        return report

    def sweep_stray_pictures(self, now: datetime | None = None) -> int:
        """Remove the derived files of every content that has no row, once the newest of them is
        older than ``derived_grace_seconds``; returns how many contents' files went. One listing
        of the store's derived files, one query per :data:`STRAY_BATCH` contents."""
        cutoff = (now or utcnow()).timestamp() - self.derived_grace_seconds
        removed = 0
        batch: dict[str, float] = {}
        for key, put_at in self.blobs.derived_files():
            digest = key.partition("/")[0]
            batch[digest] = max(put_at, batch.get(digest, put_at))
            if len(batch) > STRAY_BATCH:  # the listing is in key order: a content's files come together
                last = next(reversed(batch))
                pending = {last: batch.pop(last)}
                removed += self._sweep_stray_batch(batch, cutoff)
                batch = pending
        removed += self._sweep_stray_batch(batch, cutoff)
        if removed:
            log.info(
                "library sweep: pictures of %d contents that no longer exist removed",
                removed,
                extra={"event": "stray_pictures_removed"},
            )
        return removed

    def _sweep_stray_batch(self, newest: dict[str, float], cutoff: float) -> int:
        old = [digest for digest, put_at in newest.items() if put_at < cutoff]
        if not old:
            return 0
        with self.db.reading() as session:
            known = set(session.scalars(select(Content.content_hash).where(Content.content_hash.in_(old))).all())
        return sum(self._remove_stray_pictures(digest) for digest in old if digest not in known)

    def _remove_stray_pictures(self, content_hash: str) -> bool:
        """Remove the derived files of ``content_hash`` if it has no content row, holding what
        stands for the content's lock when there is no row: an uncommitted row of that hash.
        An upload that would make the row meanwhile waits on the unique index (SQLite: on the
        write lock) until it is rolled back, so no job of a new row can put pictures while they
        are removed; a job putting pictures now holds a row (the insert fails: they are kept)."""
        with self.db.session() as session:
            try:
                with session.begin_nested():
                    session.add(
                        Content(content_hash=content_hash, file_size=0, storage_key=content_hash, media_info={})
                    )
                    session.flush()
                    self.blobs.delete_derived(content_hash)
                    raise _KeepRow
            except IntegrityError:  # a row of this content exists (again): its pictures stay
                return False
            except _KeepRow:  # nothing is committed: the placeholder was only a lock
                pass
        log.info(
            "pictures of content %s removed: it no longer exists",
            content_hash,
            extra={"content_hash": content_hash, "event": "stray_pictures_removed"},
        )
        return True

    def _remove_orphan(self, content_id: str) -> bool:
        with self.db.session() as session:
            content = session.get(Content, content_id, with_for_update=True, populate_existing=True)
            if content is None or self._referenced(session, content_id):
                return False
            if not self._remove_content(session, content):
                return False
            key, digest = content.storage_key, content.content_hash
        self._purge(key, digest)
        return True


def _upload_in_flight(session: Session, content_hash: str) -> bool:
    """An upload of these bytes past validation (its hash recorded) that has not linked its video."""
    return bool(
        session.scalar(
            select(
                exists().where(
                    UploadSession.content_hash == content_hash, UploadSession.status == SessionStatus.ASSEMBLING
                )
            )
        )
    )


def deleter_for(services: Services) -> VideoDeleter:
    """The delete path as the API and the sweeps use it (a requeued waiter is handed to the broker)."""
    return VideoDeleter(
        services.db,
        services.processing.blobs,
        services.events,
        services.processing.dispatch,
        derived_grace_seconds=services.settings.library.derived_grace_seconds,
    )
