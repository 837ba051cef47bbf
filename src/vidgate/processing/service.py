"""Processing of stored videos: queue them, run the pipeline, store one result each.

The video row is the outbox: ``status=queued`` with ``dispatched_at`` unset means "not yet
handed to the broker". :meth:`ProcessingService.dispatch_pending` hands such videos over and
is repeated while the broker is down, so an upload accepted during a Redis outage is
processed once Redis is back. Jobs are idempotent: a video that already has a result is not
analysed again, and the unique result row cannot be stored twice.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vidgate import metrics
from vidgate.auth import Principal
from vidgate.config import Settings
from vidgate.db.engine import Database
from vidgate.db.models import (
    FrameHash,
    SessionStatus,
    UploadSession,
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


@dataclass
class JobOutcome:
    """What one run of a job ended in."""

    status: str  # "completed", "skipped", "failed", "retry"
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
        """Queue a stored video (again) unless it is being processed right now."""
        with self.db.session() as session:
            video = session.get(Video, video_id)
            if video is None or video.status is VideoStatus.PROCESSING:
                return False
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
            return int(getattr(result, "rowcount", 0) or 0)

    # ------------------------------------------------------------------ running
    def run(self, video_id: str, attempt: int = 0) -> JobOutcome:
        """Process one video. Transient errors ask for a retry (with backoff) until the retries
        are used up; a video the decoder cannot read fails at once."""
        with self.db.session() as session:
            video = session.get(Video, video_id)
            if video is None:
                return JobOutcome("skipped")
            done = session.scalar(select(VideoAnalysisResultRow.id).where(VideoAnalysisResultRow.video_id == video_id))
            if done is not None and video.status is VideoStatus.COMPLETED:
                return JobOutcome("skipped")
            video.status = VideoStatus.PROCESSING
            video.started_at = utcnow()
            video.attempts = (video.attempts or 0) + 1
            video.stage, video.progress = "starting", 0.0
            path = self.blobs.path(video.storage_key)
            content_hash = video.content_hash
            options = dict(video.processing_options or {})
            priority = video.priority
            if self.events is not None:
                self.events.to_video_owners(
                    ProcessingInitiated(
                        video_id=video_id, data=ProcessingInitiatedData(priority=priority, attempt=attempt + 1)
                    ),
                    session,
                )
        log.info(
            "processing %s started (attempt %d)",
            video_id,
            attempt + 1,
            extra={"video_id": video_id, "event": "processing_initiated", "attempt": attempt + 1},
        )
        model_type = str(options.get("model_type") or self.settings.processing.default_model_type)
        try:
            if not path.is_file():  # storage not mounted, or being restored: may pass
                raise FileNotFoundError(f"the stored file {path} is missing")
            result = analyze(
                path,
                video_id=video_id,
                content_hash=content_hash,
                model_type=model_type,
                config=self.config,
                progress=self._progress_writer(video_id),
            )
        except PipelineError as exc:
            self.mark_failed(video_id, str(exc))
            metrics.PROCESSING_JOBS.labels("failed").inc()
            return JobOutcome("failed")
        except Exception as exc:
            if attempt >= self.settings.processing.max_retries:
                self.mark_failed(video_id, f"gave up after {attempt + 1} attempts: {exc}")
                metrics.PROCESSING_JOBS.labels("failed").inc()
                return JobOutcome("failed")
            metrics.PROCESSING_JOBS.labels("retried").inc()
            delay = self.settings.processing.retry_backoff_seconds * (2**attempt)
            log.warning("processing %s failed (attempt %d), retrying in %.1f s: %s", video_id, attempt + 1, delay, exc)
            with self.db.session() as session:
                session.execute(update(Video).where(Video.id == video_id).values(error_message=str(exc)))
            return JobOutcome("retry", retry_in=delay)
        self._store(result, model_type)
        metrics.PROCESSING_JOBS.labels("completed").inc()
        for stage in result.stages:
            metrics.PROCESSING_STAGE.labels(stage.name).observe(stage.seconds)
        metrics.PROCESSING_STAGE.labels("total").observe(result.processing_seconds)
        log.info(
            "video %s processed in %.2f s",
            video_id,
            result.processing_seconds,
            extra={"video_id": video_id, "event": "processing_completed", "seconds": result.processing_seconds},
        )
        return JobOutcome("completed")

    def _progress_writer(self, video_id: str) -> Any:
        last = [0.0]

        def write(stage: str, fraction: float) -> None:
            now = time.monotonic()
            if now - last[0] < PROGRESS_EVERY_SECONDS and fraction < 1.0:
                return
            last[0] = now
            percent = round(fraction * 100, 1)
            with self.db.session() as session:
                session.execute(update(Video).where(Video.id == video_id).values(stage=stage, progress=percent))
                if self.events is not None and self.events.progress_due(f"video:{video_id}", final=fraction >= 1.0):
                    self.events.to_video_owners(
                        ProcessingProgress(
                            video_id=video_id, data=ProcessingProgressData(stage=stage, progress_percentage=percent)
                        ),
                        session,
                    )

        return write

    def _store(self, result: VideoAnalysisResult, model_type: str) -> None:
        """Store the result once; frame hashes are replaced, never doubled."""
        fingerprint = int(result.fingerprint, 16)
        with self.db.session() as session:
            try:
                with session.begin_nested():
                    session.add(
                        VideoAnalysisResultRow(
                            video_id=result.video_id,
                            pipeline_version=result.pipeline_version,
                            model_type=model_type,
                            result=result.model_dump(mode="json"),
                            processing_seconds=result.processing_seconds,
                        )
                    )
            except IntegrityError:
                session.execute(
                    update(VideoAnalysisResultRow)
                    .where(VideoAnalysisResultRow.video_id == result.video_id)
                    .values(result=result.model_dump(mode="json"), processing_seconds=result.processing_seconds)
                )
            session.execute(delete(FrameHash).where(FrameHash.video_id == result.video_id))
            for sample in result.samples:
                value = int(sample.phash, 16)
                b0, b1, b2, b3 = bands(value)
                session.add(
                    FrameHash(
                        video_id=result.video_id,
                        timestamp=sample.timestamp,
                        hash=to_signed(value),
                        band0=b0,
                        band1=b1,
                        band2=b2,
                        band3=b3,
                    )
                )
            session.execute(
                update(Video)
                .where(Video.id == result.video_id)
                .values(
                    status=VideoStatus.COMPLETED,
                    stage="done",
                    progress=100.0,
                    finished_at=utcnow(),
                    fingerprint=to_signed(fingerprint),
                    error_message=None,
                )
            )
            if self.events is not None:
                self.events.to_video_owners(
                    ProcessingCompleted(
                        video_id=result.video_id,
                        data=ProcessingCompletedData(
                            processing_seconds=result.processing_seconds,
                            fingerprint=result.fingerprint,
                            duration=result.metadata.duration,
                            result_url=f"/v1/videos/{result.video_id}/result",
                            result=result.model_dump(mode="json"),
                        ),
                    ),
                    session,
                )

    def mark_failed(self, video_id: str, reason: str) -> None:
        log.warning(
            "processing of %s failed: %s",
            video_id,
            reason,
            extra={"video_id": video_id, "event": "processing_failed"},
        )
        with self.db.session() as session:
            session.execute(
                update(Video)
                .where(Video.id == video_id)
                .values(status=VideoStatus.FAILED, error_message=reason[:2000], finished_at=utcnow())
            )
            if self.events is not None:
                self.events.to_video_owners(
                    ProcessingFailed(
                        video_id=video_id, data=FailureData(error_code="processing_failed", message=reason)
                    ),
                    session,
                )

    # ------------------------------------------------------------------ reading
    def owned_video(self, principal: Principal, video_id: str) -> Video:
        """The video, if ``principal`` uploaded it (a completed session of theirs points at it)."""
        with self.db.session() as session:
            owns = session.scalar(
                select(UploadSession.id)
                .where(
                    UploadSession.video_id == video_id,
                    UploadSession.user_id == principal.user_id,
                    UploadSession.status == SessionStatus.COMPLETED,
                )
                .limit(1)
            )
            video = session.get(Video, video_id) if owns else None
            if video is None:
                raise VideoNotFound(f"No video {video_id!r}.")
            session.expunge(video)
            return video

    def result(self, principal: Principal, video_id: str) -> VideoAnalysisResult:
        video = self.owned_video(principal, video_id)
        stored = self.stored_result(video_id)
        if stored is None:
            detail = f": {video.error_message}" if video.status is VideoStatus.FAILED and video.error_message else ""
            raise ResultNotReady(f"Video {video_id!r} is {video.status.value}; it has no result yet{detail}.")
        stored.similar_videos = find_similar(
            self.db,
            stored,
            user_id=None if self.settings.processing.similarity_scope == "shared" else principal.user_id,
            max_distance=self.settings.processing.similarity_max_distance,
            min_score=self.settings.processing.similarity_min_score,
        )
        return stored

    def stored_result_json(self, video_id: str, session: Session | None = None) -> dict[str, Any] | None:
        """The stored result, read in ``session`` when given (a transaction that stages an event)."""
        query = select(VideoAnalysisResultRow.result).where(VideoAnalysisResultRow.video_id == video_id)
        if session is not None:
            row = session.scalar(query)
        else:
            with self.db.session() as own:
                row = own.scalar(query)
        return dict(row) if row is not None else None

    def stored_result(self, video_id: str) -> VideoAnalysisResult | None:
        row = self.stored_result_json(video_id)
        return VideoAnalysisResult.model_validate(row) if row is not None else None
