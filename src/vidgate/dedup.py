"""Exact deduplication: one video per content hash, processed once.

The hash that decides is always the SHA-256 computed over the bytes the server received,
never a client's claim, so answering from an existing result only ever tells a user about
content they have just proven to hold. A client-sent ``file_hash`` can only shortcut an
upload for the same owner's own earlier upload (see :func:`owner_has_content`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from vidgate.db.models import SessionStatus, UploadSession, Video, VideoStatus, utcnow


@dataclass(frozen=True)
class DedupDecision:
    queue_job: bool  # a processing job must be (re)queued for the video
    duplicate: bool  # the content was already known: the upload is answered from it


def decide(video: Video, *, is_new: bool, enabled: bool, priority: int, options: dict[str, object]) -> DedupDecision:
    """Decide what a completed upload of ``video``'s content needs, and mark the video queued if
    it needs processing. Called inside the transaction that completes the session."""
    if is_new:
        _queue(video, priority, options)
        return DedupDecision(queue_job=True, duplicate=False)
    if video.status in (VideoStatus.QUEUED, VideoStatus.PROCESSING):
        if video.status is VideoStatus.QUEUED and video.dispatched_at is None and priority > video.priority:
            video.priority = priority  # the more urgent upload decides, while the broker has not taken it
        return DedupDecision(queue_job=False, duplicate=True)
    if video.status is VideoStatus.COMPLETED and enabled:
        return DedupDecision(queue_job=False, duplicate=True)
    _queue(video, priority, options)  # failed before, never queued, or dedup disabled: process (again)
    return DedupDecision(queue_job=True, duplicate=not is_new)


def _queue(video: Video, priority: int, options: dict[str, object]) -> None:
    video.status = VideoStatus.QUEUED
    video.priority = priority
    video.processing_options = dict(options)
    video.queued_at = utcnow()
    video.dispatched_at = None
    video.error_message = None
    video.progress = 0.0
    video.stage = "queued"


def owner_has_content(session: Session, user_id: str, content_hash: str) -> str | None:
    """The id of a processed video with ``content_hash`` that ``user_id`` uploaded before."""
    return session.scalar(
        select(Video.id)
        .join(UploadSession, UploadSession.video_id == Video.id)
        .where(
            Video.content_hash == content_hash,
            Video.status == VideoStatus.COMPLETED,
            UploadSession.user_id == user_id,
            UploadSession.status == SessionStatus.COMPLETED,
        )
        .limit(1)
    )
