"""``RETENTION_DAYS``: videos uploaded longer ago than that are deleted, as a DELETE would
(the same path, :class:`vidgate.library.deletion.VideoDeleter`: the owner's record always, the
bytes with their last owner, a ``video_deleted`` event and webhook with reason ``retention``).

:func:`sweep_library` runs with the periodic cleanup (``vidgate serve`` and the Celery beat);
it also finishes deletes a crash interrupted and removes pictures whose content no longer
exists (:meth:`VideoDeleter.sweep`).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from pydantic import BaseModel
from sqlalchemy import select

from vidgate.db.models import Video, utcnow
from vidgate.errors import VideoNotFound
from vidgate.library.deletion import VideoDeleter, deleter_for

if TYPE_CHECKING:
    from vidgate.wiring import Services

log = logging.getLogger(__name__)

BATCH = 200  # videos looked up per query; a round goes on until none is left


class LibrarySweepReport(BaseModel):
    expired_videos_deleted: int = 0
    withdrawn_blobs_restored: int = 0
    withdrawn_blobs_purged: int = 0
    orphan_contents_removed: int = 0
    stray_pictures_removed: int = 0


def delete_expired(deleter: VideoDeleter, retention_days: float, now: datetime | None = None) -> int:
    """Delete every video created more than ``retention_days`` before ``now``."""
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    deleted = 0
    while True:
        with deleter.db.session() as session:
            # No index of its own and no order: an index on created_at alone made PostgreSQL
            # plan the owner's listing on it (filtering by owner) instead of the owner-first
            # keyset indexes (bench/library.py). This scan stops at BATCH matches; with none,
            # it reads the table once per sweep (every UPLOAD_CLEANUP_INTERVAL_SECONDS).
            batch = session.execute(select(Video.id, Video.user_id).where(Video.created_at < cutoff).limit(BATCH)).all()
        if not batch:
            return deleted
        for video_id, user_id in batch:
            try:
                deleter.delete(user_id, video_id, reason="retention")
                deleted += 1
            except VideoNotFound:  # its owner deleted it meanwhile
                continue
        if len(batch) < BATCH:
            return deleted


def sweep_library(services: Services, now: datetime | None = None) -> LibrarySweepReport:
    """One round: expired videos (when ``RETENTION_DAYS`` is set), then what crashes left."""
    deleter = deleter_for(services)
    report = LibrarySweepReport()
    days = services.settings.library.retention_days
    if days is not None:
        report.expired_videos_deleted = delete_expired(deleter, days, now)
    finished = deleter.sweep(now)
    report.withdrawn_blobs_restored = finished.restored_blobs
    report.withdrawn_blobs_purged = finished.purged_blobs
    report.orphan_contents_removed = finished.orphan_contents_removed
    report.stray_pictures_removed = finished.stray_pictures_removed
    if report.expired_videos_deleted:
        log.info(
            "retention: %d videos older than %s days deleted",
            report.expired_videos_deleted,
            days,
            extra={"event": "retention_sweep"},
        )
    return report


async def sweep_library_periodically(services: Services) -> None:
    """In ``vidgate serve``: a round at start (finishing what a crash left) and then every
    ``UPLOAD_CLEANUP_INTERVAL_SECONDS``, beside the upload cleanup; a failed round is logged."""
    while True:
        try:
            await asyncio.to_thread(sweep_library, services)
        except Exception:
            log.exception("library sweep failed")
        await asyncio.sleep(services.settings.upload.cleanup_interval_seconds)
