"""Exact deduplication: bytes stored and analysed once per SHA-256, a video per owner.

The hash that decides is always the SHA-256 computed over the bytes the server received,
never a client's claim. Whatever the scope, an owner's upload gets a video of that owner's
own (their id, file name, priority, options, times); only the content's analysis is shared.

What the uploader is *told* depends on ``DEDUP_SCOPE``:

- ``owner`` (default): reuse across owners is invisible. Another owner's earlier upload of the
  same bytes changes nothing in the answer: no ``duplicate`` flag, and the video is queued and
  goes through the usual processing events, its job reusing the stored analysis instead of
  running it again. Only the uploader's own earlier upload makes it a duplicate.
- ``global``: any earlier upload of the bytes makes it a duplicate, answered at once from the
  stored analysis when there is one.

A repeated upload by the same owner is answered with the same video (one per owner and content).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from vidgate.db.models import AnalysisStatus, Content, Video, VideoStatus

DedupScope = Literal["owner", "global"]


@dataclass(frozen=True)
class DedupDecision:
    queue_job: bool  # the video must be handed to the queue
    duplicate: bool  # what the uploader is told: the content was already known to them


def decide(
    content: Content,
    video: Video,
    *,
    content_is_new: bool,
    video_is_new: bool,
    scope: DedupScope,
    enabled: bool,
    priority: int,
    options: dict[str, object],
    now: datetime,
) -> DedupDecision:
    """Decide what a completed upload needs and update ``content`` and ``video`` to match.
    Called inside the transaction that completes the session, with both rows locked."""
    if not video_is_new:  # the same owner sent these bytes before: today's behaviour
        if video.status is VideoStatus.COMPLETED and enabled:
            return DedupDecision(queue_job=False, duplicate=True)
        if video.status in (VideoStatus.QUEUED, VideoStatus.PROCESSING):
            if video.status is VideoStatus.QUEUED and video.dispatched_at is None and priority > video.priority:
                video.priority = priority  # the more urgent upload decides, while the broker has not taken it
            return DedupDecision(queue_job=False, duplicate=True)
        _analyse_again_if_needed(content, enabled)  # failed before, or dedup disabled: process again
        queue(video, priority, options, now)
        return DedupDecision(queue_job=True, duplicate=True)
    visible = not content_is_new and scope == "global"
    if visible and enabled and content.status is AnalysisStatus.COMPLETED:
        _complete_at_once(video, now)
        return DedupDecision(queue_job=False, duplicate=True)
    if not content_is_new:
        _analyse_again_if_needed(content, enabled)
    queue(video, priority, options, now)
    return DedupDecision(queue_job=True, duplicate=visible)


def queue(video: Video, priority: int, options: dict[str, object], now: datetime) -> None:
    """Mark ``video`` as waiting for a job (the row is the queue's outbox)."""
    video.status = VideoStatus.QUEUED
    video.priority = priority
    video.processing_options = dict(options)
    video.queued_at = now
    video.dispatched_at = None
    video.error_message = None
    video.progress = 0.0
    video.stage = "queued"


def _analyse_again_if_needed(content: Content, enabled: bool) -> None:
    """A failed analysis is tried again; with dedup disabled a stored one is redone."""
    if content.status is AnalysisStatus.FAILED or (content.status is AnalysisStatus.COMPLETED and not enabled):
        content.status = AnalysisStatus.PENDING
        content.analysing_video_id = None


def _complete_at_once(video: Video, now: datetime) -> None:
    video.status = VideoStatus.COMPLETED
    video.stage, video.progress = "done", 100.0
    video.queued_at = video.started_at = video.finished_at = now
