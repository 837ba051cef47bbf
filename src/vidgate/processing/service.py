"""Processing of stored videos: queue them, run the pipeline, store one result per content.

A job is one owner's video; the analysis belongs to the video's content (the bytes), so it
runs once however many owners uploaded them: the first job claims it, jobs of other videos
of the same content wait and are completed with it, later ones reuse the stored result. Each
owner's video still goes queued -> processing -> completed with events of its own.

The video row is the outbox: ``status=queued`` with ``dispatched_at`` unset means "not yet
handed to the broker". :meth:`ProcessingService.dispatch_pending` hands such videos over and
is repeated while the broker is down, so an upload accepted during a Redis outage is
processed once Redis is back. Jobs are idempotent: a completed video is not processed again,
and the unique result row cannot be stored twice.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vidgate import metrics
from vidgate.auth import Principal
from vidgate.config import Settings
from vidgate.db.engine import Database
from vidgate.db.models import (
    AnalysisStatus,
    Content,
    FrameHash,
    Video,
    VideoAnalysisResultRow,
    VideoStatus,
    utcnow,
)
from vidgate.errors import ResultNotReady, VideoNotFound
from vidgate.events.publisher import EventPublisher
from vidgate.events.schema import (
    FailureData,
    ProcessingCompleted,
    ProcessingCompletedData,
    ProcessingFailed,
    ProcessingInitiated,
    ProcessingInitiatedData,
    ProcessingProgress,
    ProcessingProgressData,
)
from vidgate.processing.analyzers.phash import bands, to_signed
from vidgate.processing.models import VideoAnalysisResult
from vidgate.processing.pipeline import PipelineConfig, PipelineError, analyze
from vidgate.processing.queue import QueueUnavailable, TaskQueue
from vidgate.processing.similarity import find_similar
from vidgate.storage.local import LocalBlobStore

log = logging.getLogger(__name__)

PROGRESS_EVERY_SECONDS = 0.5  # progress is written at most this often per job
#: what a video whose content's analysis is reused reports: the pipeline's first and last progress
REUSED_PROGRESS = (("metadata", 0.05), ("embeddings", 1.0))


@dataclass
class JobOutcome:
    """What one run of a job ended in."""

    status: str  # "completed", "skipped", "failed", "retry", "waiting" (another job analyses the content)
    retry_in: float | None = None


class ProcessingService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        blobs: LocalBlobStore,
        queue: TaskQueue | None = None,
        events: EventPublisher | None = None,
    ) -> None:
        self.settings = settings
        self.events = events
        self.db = db
        self.blobs = blobs
        self.queue = queue
        processing = settings.processing
        self.config = PipelineConfig(
            model_dir=processing.model_dir or settings.server.data_dir / "models",
            model_files=processing.model_files,
            batch_size=processing.embedding_batch_size,
            sample_interval=processing.sample_interval_seconds,
            decode_threads=processing.decode_threads,
        )

    # ------------------------------------------------------------------ queueing
    def dispatch(self, video_id: str) -> bool:
        """Offer one queued video to the queue; False (and still queued) when the broker is down."""
        if self.queue is None:
            return False
        with self.db.session() as session:
            # Claim first: two dispatchers (the upload and the periodic loop) never both enqueue.
            claimed = session.execute(
                update(Video)
                .where(Video.id == video_id, Video.status == VideoStatus.QUEUED, Video.dispatched_at.is_(None))
                .values(dispatched_at=utcnow())
            )
            if not getattr(claimed, "rowcount", 0):
                return False
            priority = session.scalars(select(Video.priority).where(Video.id == video_id)).one()
        try:
            self.queue.enqueue(video_id, priority)
        except QueueUnavailable as exc:
            log.warning("video %s stays queued: %s", video_id, exc.message)
            with self.db.session() as session:
                session.execute(update(Video).where(Video.id == video_id).values(dispatched_at=None))
            return False
        return True

    def requeue(self, video_id: str) -> bool:
        """Queue a stored video to be analysed again, unless it is being processed right now."""
        with self.db.session() as session:
            locked = _lock_video_and_content(session, video_id)
            if locked is None or locked[0].status is VideoStatus.PROCESSING:
                return False
            video, content = locked
            if content.status is not AnalysisStatus.PROCESSING:
                content.status, content.analysing_video_id = AnalysisStatus.PENDING, None
            video.status = VideoStatus.QUEUED
            video.queued_at = utcnow()
            video.dispatched_at = None
        # Queued either way: by us now, or by the periodic dispatcher (which may claim it first,
        # or later if the broker is down). Counting only our own dispatch made batches race it.
        self.dispatch(video_id)
        return True

    def dispatch_pending(self) -> int:
        """Offer every queued video the broker has not taken yet (oldest, most urgent first)."""
        with self.db.session() as session:
            pending = session.scalars(
                select(Video.id)
                .where(Video.status == VideoStatus.QUEUED, Video.dispatched_at.is_(None))
                .order_by(Video.priority.desc(), Video.queued_at)
            ).all()
        dispatched = 0
        for video_id in pending:
            if not self.dispatch(video_id):
                break  # the broker is down: try again next round
            dispatched += 1
        return dispatched

    def requeue_abandoned(self) -> int:
        """In-process queue only: jobs that lived in a previous process are offered again."""
        with self.db.session() as session:
            result = session.execute(
                update(Video)
                .where(Video.status.in_([VideoStatus.QUEUED, VideoStatus.PROCESSING]))
                .values(status=VideoStatus.QUEUED, dispatched_at=None)
            )
            # their analyses died with that process too: the first job to run claims each again
            session.execute(
                update(Content)
                .where(Content.status == AnalysisStatus.PROCESSING)
                .values(status=AnalysisStatus.PENDING, analysing_video_id=None)
            )
            return int(getattr(result, "rowcount", 0) or 0)

    # ------------------------------------------------------------------ running
    def run(self, video_id: str, attempt: int = 0) -> JobOutcome:
        """Process one owner's video. Its content is analysed by the first job that claims it;
        a job that finds the analysis stored reuses it, one that finds it running waits (the
        running job completes every waiting video). Transient errors ask for a retry (with
        backoff) until the retries are used up; a video the decoder cannot read fails at once."""
        with self.db.session() as session:
            locked = _lock_video_and_content(session, video_id)
            if locked is None or locked[0].status is VideoStatus.COMPLETED:
                return JobOutcome("skipped")
            video, content = locked
            now = utcnow()
            video.status = VideoStatus.PROCESSING
            video.started_at = now
            video.attempts = (video.attempts or 0) + 1
            video.stage, video.progress = "starting", 0.0
            if content.status is AnalysisStatus.COMPLETED:
                action = "reuse"
            elif content.status is AnalysisStatus.PROCESSING and self._claim_alive(session, content, video_id):
                action = "wait"
            else:
                action = "analyse"
                content.status = AnalysisStatus.PROCESSING
                content.analysing_video_id = video_id
                content.analyses = (content.analyses or 0) + 1
                content.started_at = now
            content_id, content_hash = content.id, content.content_hash
            path = self.blobs.path(content.storage_key)
            options = dict(video.processing_options or {})
            priority, video_attempt, user_id = video.priority, video.attempts, video.user_id
        log.info(
            "processing %s started (attempt %d)",
            video_id,
            video_attempt,
            extra={"video_id": video_id, "event": "processing_initiated", "attempt": video_attempt},
        )
        if self.events is not None:
            self.events.to_user(
                ProcessingInitiated(
                    video_id=video_id, data=ProcessingInitiatedData(priority=priority, attempt=video_attempt)
                ),
                user_id,
            )
        if action == "reuse":
            # The events of a short analysis (its first and last progress report), so reuse looks
            # like a first processing to the owner; only its speed differs.
            report = self._progress_writer(content_id, only=video_id)
            for stage_name, fraction in REUSED_PROGRESS:
                report(stage_name, fraction)
            self._complete_waiting(content_id, only=video_id)
            metrics.PROCESSING_JOBS.labels("reused").inc()
            return JobOutcome("completed")
        if action == "wait":
            log.info(
                "video %s waits for the analysis of its content %s",
                video_id,
                content_id,
                extra={"video_id": video_id, "content_id": content_id, "event": "processing_waiting"},
            )
            return JobOutcome("waiting")
        model_type = str(options.get("model_type") or self.settings.processing.default_model_type)
        try:
            if not path.is_file():  # storage not mounted, or being restored: may pass
                raise FileNotFoundError(f"the stored file {path} is missing")
            result = analyze(
                path,
                video_id=content_id,  # the stored analysis names no owner's video; readers put theirs in
                content_hash=content_hash,
                model_type=model_type,
                config=self.config,
                progress=self._progress_writer(content_id),
            )
        except PipelineError as exc:
            self.mark_failed(content_id, str(exc))
            metrics.PROCESSING_JOBS.labels("failed").inc()
            return JobOutcome("failed")
        except Exception as exc:
            if attempt >= self.settings.processing.max_retries:
                self.mark_failed(content_id, f"gave up after {attempt + 1} attempts: {exc}")
                metrics.PROCESSING_JOBS.labels("failed").inc()
                return JobOutcome("failed")
            metrics.PROCESSING_JOBS.labels("retried").inc()
            delay = self.settings.processing.retry_backoff_seconds * (2**attempt)
            log.warning("processing %s failed (attempt %d), retrying in %.1f s: %s", video_id, attempt + 1, delay, exc)
            with self.db.session() as session:
                session.execute(update(Video).where(Video.id == video_id).values(error_message=str(exc)))
            return JobOutcome("retry", retry_in=delay)
        self._store(result, content_id, model_type)
        metrics.PROCESSING_JOBS.labels("completed").inc()
        for stage in result.stages:
            metrics.PROCESSING_STAGE.labels(stage.name).observe(stage.seconds)
        metrics.PROCESSING_STAGE.labels("total").observe(result.processing_seconds)
        log.info(
            "content %s of video %s analysed in %.2f s",
            content_id,
            video_id,
            result.processing_seconds,
            extra={
                "video_id": video_id,
                "content_id": content_id,
                "event": "content_analysed",
                "seconds": result.processing_seconds,
            },
        )
        self._complete_waiting(content_id)
        return JobOutcome("completed")

    @staticmethod
    def _claim_alive(session: Session, content: Content, video_id: str) -> bool:
        """Whether another video's job holds the content's analysis (a claim left by a video that
        is no longer waiting, or by this very video's earlier delivery, is taken over)."""
        holder = content.analysing_video_id
        if holder is None or holder == video_id:
            return False
        status = session.scalar(select(Video.status).where(Video.id == holder))
        return status in (VideoStatus.QUEUED, VideoStatus.PROCESSING)

    def _progress_writer(self, content_id: str, only: str | None = None) -> Any:
        """Writes an analysis's progress to the videos waiting on it (or just ``only``)."""
        last = [0.0]
        waiting_on = Video.id == only if only is not None else Video.content_id == content_id

        def write(stage: str, fraction: float) -> None:
            now = time.monotonic()
            if now - last[0] < PROGRESS_EVERY_SECONDS and fraction < 1.0:
                return
            last[0] = now
            percent = round(fraction * 100, 1)
            with self.db.session() as session:
                waiting = session.execute(
                    update(Video)
                    .where(waiting_on, Video.status == VideoStatus.PROCESSING)
                    .values(stage=stage, progress=percent)
                    .returning(Video.id, Video.user_id)
                ).all()
            if self.events is None:
                return
            for video_id, user_id in waiting:  # every owner hears of their own video only
                if self.events.progress_due(f"video:{video_id}", final=fraction >= 1.0):
                    self.events.to_user(
                        ProcessingProgress(
                            video_id=video_id, data=ProcessingProgressData(stage=stage, progress_percentage=percent)
                        ),
                        user_id,
                    )

        return write

    def _store(self, result: VideoAnalysisResult, content_id: str, model_type: str) -> None:
        """Store the content's analysis once; frame hashes are replaced, never doubled."""
        fingerprint = int(result.fingerprint, 16)
        stored = result.model_dump(mode="json")
        with self.db.session() as session:
            try:
                with session.begin_nested():
                    session.add(
                        VideoAnalysisResultRow(
                            content_id=content_id,
                            pipeline_version=result.pipeline_version,
                            model_type=model_type,
                            result=stored,
                            processing_seconds=result.processing_seconds,
                        )
                    )
            except IntegrityError:
                session.execute(
                    update(VideoAnalysisResultRow)
                    .where(VideoAnalysisResultRow.content_id == content_id)
                    .values(result=stored, processing_seconds=result.processing_seconds)
                )
            session.execute(delete(FrameHash).where(FrameHash.content_id == content_id))
            for sample in result.samples:
                value = int(sample.phash, 16)
                b0, b1, b2, b3 = bands(value)
                session.add(
                    FrameHash(
                        content_id=content_id,
                        timestamp=sample.timestamp,
                        hash=to_signed(value),
                        band0=b0,
                        band1=b1,
                        band2=b2,
                        band3=b3,
                    )
                )
            session.execute(
                update(Content)
                .where(Content.id == content_id)
                .values(
                    status=AnalysisStatus.COMPLETED,
                    analysing_video_id=None,
                    finished_at=utcnow(),
                    fingerprint=to_signed(fingerprint),
                    error_message=None,
                )
            )

    def _complete_waiting(self, content_id: str, only: str | None = None) -> None:
        """Complete the videos whose jobs wait on the content's stored analysis (or just ``only``),
        each with its owner's own processing_completed event."""
        with self.db.session() as session:
            stored = session.scalar(
                select(VideoAnalysisResultRow.result).where(VideoAnalysisResultRow.content_id == content_id)
            )
            condition = Video.id == only if only is not None else Video.content_id == content_id
            now = utcnow()
            done = session.execute(
                update(Video)
                .where(condition, Video.status == VideoStatus.PROCESSING)
                .values(status=VideoStatus.COMPLETED, stage="done", progress=100.0, finished_at=now, error_message=None)
                .returning(Video.id, Video.user_id)
            ).all()
        for video_id, _ in done:
            log.info(
                "video %s processed%s",
                video_id,
                " (stored analysis reused)" if only is not None else "",
                extra={"video_id": video_id, "content_id": content_id, "event": "processing_completed"},
            )
        if stored is None or self.events is None:
            return
        for video_id, user_id in done:
            result = owner_result(dict(stored), video_id, now)
            self.events.to_user(
                ProcessingCompleted(
                    video_id=video_id,
                    data=ProcessingCompletedData(
                        processing_seconds=result.processing_seconds,
                        fingerprint=result.fingerprint,
                        duration=result.metadata.duration,
                        result_url=f"/v1/videos/{video_id}/result",
                        result=result.model_dump(mode="json"),
                    ),
                ),
                user_id,
            )

    def mark_failed(self, content_id: str, reason: str) -> None:
        """The content cannot be analysed: it and every video waiting on it fail, each owner told
        of their own video."""
        with self.db.session() as session:
            now = utcnow()
            session.execute(
                update(Content)
                .where(Content.id == content_id)
                .values(
                    status=AnalysisStatus.FAILED, analysing_video_id=None, error_message=reason[:2000], finished_at=now
                )
            )
            failed = session.execute(
                update(Video)
                .where(Video.content_id == content_id, Video.status == VideoStatus.PROCESSING)
                .values(status=VideoStatus.FAILED, error_message=reason[:2000], finished_at=now)
                .returning(Video.id, Video.user_id)
            ).all()
        for video_id, user_id in failed:
            log.warning(
                "processing of %s failed: %s",
                video_id,
                reason,
                extra={"video_id": video_id, "event": "processing_failed"},
            )
            if self.events is not None:
                self.events.to_user(
                    ProcessingFailed(
                        video_id=video_id, data=FailureData(error_code="processing_failed", message=reason)
                    ),
                    user_id,
                )

    # ------------------------------------------------------------------ reading
    def owned_video(self, principal: Principal, video_id: str) -> tuple[Video, Content]:
        """The video and its content, if the video is ``principal``'s (anyone else's is not found)."""
        with self.db.session() as session:
            video = session.get(Video, video_id)
            if video is None or video.user_id != principal.user_id:
                raise VideoNotFound(f"No video {video_id!r}.")
            content = session.get_one(Content, video.content_id)
            session.expunge_all()
            return video, content

    def result(self, principal: Principal, video_id: str) -> VideoAnalysisResult:
        video, content = self.owned_video(principal, video_id)
        stored = self.owner_result(video_id)
        if stored is None:
            detail = f": {video.error_message}" if video.status is VideoStatus.FAILED and video.error_message else ""
            raise ResultNotReady(f"Video {video_id!r} is {video.status.value}; it has no result yet{detail}.")
        stored.similar_videos = find_similar(
            self.db,
            stored,
            content_id=content.id,
            user_id=principal.user_id,
            shared=self.settings.processing.similarity_scope == "shared",
            max_distance=self.settings.processing.similarity_max_distance,
            min_score=self.settings.processing.similarity_min_score,
        )
        return stored

    def owner_result(self, video_id: str) -> VideoAnalysisResult | None:
        """The stored analysis as the video's owner sees it (their video id, the time their video
        completed), once their video has completed; None before."""
        with self.db.session() as session:
            row = session.execute(
                select(VideoAnalysisResultRow.result, Video.finished_at)
                .join(Video, Video.content_id == VideoAnalysisResultRow.content_id)
                .where(Video.id == video_id, Video.status == VideoStatus.COMPLETED)
            ).first()
        if row is None:
            return None
        stored, finished_at = row
        return owner_result(dict(stored), video_id, finished_at or utcnow())

    def owner_result_json(self, video_id: str) -> dict[str, Any] | None:
        result = self.owner_result(video_id)
        return result.model_dump(mode="json") if result is not None else None


def _lock_video_and_content(session: Session, video_id: str) -> tuple[Video, Content] | None:
    """Lock a video's content, then the video: the order upload completion takes them in, so
    the two never wait for each other (PostgreSQL would abort one as a deadlock)."""
    content_id = session.scalar(select(Video.content_id).where(Video.id == video_id))
    if content_id is None:
        return None
    content = session.get_one(Content, content_id, with_for_update=True)
    video = session.get_one(Video, video_id, with_for_update=True, populate_existing=True)
    return video, content


def owner_result(stored: dict[str, Any], video_id: str, completed_at: datetime) -> VideoAnalysisResult:
    """A content's stored analysis as one owner's result: their video id, and the time their
    video completed (not when the bytes were first analysed, which could tell of another owner)."""
    result = VideoAnalysisResult.model_validate(stored)
    return result.model_copy(update={"video_id": video_id, "created_at": completed_at})
