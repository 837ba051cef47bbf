"""Processing of stored videos: queue them, run the pipeline, store one result each.

The video row is the outbox: ``status=queued`` with ``dispatched_at`` unset means "not yet
handed to the broker". :meth:`ProcessingService.dispatch_pending` hands such videos over and
is repeated while the broker is down, so an upload accepted during a Redis outage is
processed once Redis is back. Jobs are idempotent: a video that already has a result is not
analysed again, and the unique result row cannot be stored twice.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

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
    HashMatchData,
    HashMatchEvent,
    ProcessingCompleted,
    ProcessingCompletedData,
    ProcessingFailed,
    ProcessingInitiated,
    ProcessingInitiatedData,
    ProcessingProgress,
    ProcessingProgressData,
)
from vidgate.moderation.banks import match_video
from vidgate.moderation.models import FlagReason, ModerationResult, NsfwResult
from vidgate.processing import lease
from vidgate.processing.analyzers.phash import bands, to_signed
from vidgate.processing.models import StageTiming, VideoAnalysisResult
from vidgate.processing.pictures import PictureConfig
from vidgate.processing.pipeline import PipelineConfig, PipelineError, analyze
from vidgate.processing.queue import QueueUnavailable, TaskQueue
from vidgate.processing.similarity import find_similar
from vidgate.storage.local import LocalBlobStore

log = logging.getLogger(__name__)

PROGRESS_EVERY_SECONDS = 0.5  # progress is written at most this often per job


@dataclass
class JobOutcome:
    """What one run of a job ended in."""

    status: str  # "completed", "skipped", "failed", "retry", "superseded"
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
        #: whether the last hand-over reached the broker (the dispatcher retries sooner when not)
        self.broker_reachable = True
        processing = settings.processing
        self.config = PipelineConfig(
            model_dir=processing.model_dir or settings.server.data_dir / "models",
            model_files=processing.model_files,
            batch_size=processing.embedding_batch_size,
            sample_interval=processing.sample_interval_seconds,
            decode_threads=processing.decode_threads,
            pictures=PictureConfig(
                poster_width=settings.library.poster_width,
                tile_width=settings.library.storyboard_tile_width,
                columns=settings.library.storyboard_columns,
                max_tiles=settings.library.storyboard_max_tiles,
                jpeg_quality=settings.library.jpeg_quality,
            ),
            moderation=settings.moderation.enabled,
            nsfw_threshold=settings.moderation.nsfw_threshold,
            nsfw_min_frames=settings.moderation.nsfw_min_frames,
            vpdq=settings.moderation.vpdq_enabled,
            vpdq_seconds_per_hash=settings.moderation.vpdq_seconds_per_hash,
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
            self.broker_reachable = False
            log.warning("video %s stays queued: %s", video_id, exc.message)
            with self.db.session() as session:
                session.execute(update(Video).where(Video.id == video_id).values(dispatched_at=None))
            return False
        self.broker_reachable = True
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
    def run(self, video_id: str, retries: int = 0, worker: str | None = None) -> JobOutcome:
        """Process one video under a lease (see :mod:`vidgate.processing.lease`). Transient errors
        ask for a retry (with backoff) until ``PROCESSING_MAX_RETRIES`` are used up (``retries``:
        this job's earlier transient failures); a video the decoder cannot read fails at once.
        The attempt number logged and stored is the video's own: a redelivery counts too."""
        processing = self.settings.processing
        holder = worker or lease.process_name()
        with self.db.session() as session:
            claimed = lease.claim(session, video_id, holder, processing.lease_seconds, processing.job_timeout_seconds)
            if claimed.lease is None:
                self._log_not_claimed(video_id, claimed)
                return JobOutcome("skipped")
            video = session.get_one(Video, video_id)
            path = self.blobs.path(video.storage_key)
            content_hash = video.content_hash
            options = dict(video.processing_options or {})
            priority = video.priority
        current = claimed.lease
        fields = {"video_id": video_id, "attempt": current.attempt, "worker": holder}
        log.info(
            "processing %s started (attempt %d)",
            video_id,
            current.attempt,
            extra={**fields, "event": "processing_initiated"},
        )
        if self.events is not None:
            self.events.to_video_owners(
                ProcessingInitiated(
                    video_id=video_id, data=ProcessingInitiatedData(priority=priority, attempt=current.attempt)
                )
            )
        model_type = str(options.get("model_type") or processing.default_model_type)
        try:
            try:
                with lease.LeaseKeeper(
                    self.db, current, processing.lease_seconds, processing.lease_renew_seconds
                ) as keeper:
                    if not path.is_file():  # storage not mounted, or being restored: may pass
                        raise FileNotFoundError(f"the stored file {path} is missing")
                    with tempfile.TemporaryDirectory(dir=self.blobs.root.parent, prefix=".pictures-") as pictures:
                        result = analyze(
                            path,
                            video_id=video_id,
                            content_hash=content_hash,
                            model_type=model_type,
                            config=self.config,
                            progress=self._progress_writer(current, keeper),
                            pictures_dir=Path(pictures),
                        )
                        for made in Path(pictures).iterdir():  # derived from the bytes: shared by every owner
                            self.blobs.put_derived(content_hash, made.name, made)
                self._match_banks(result)
                self._store(result, model_type, current)
            except PipelineError as exc:
                self.mark_failed(video_id, str(exc), current)
                metrics.PROCESSING_JOBS.labels("failed").inc()
                return JobOutcome("failed")
            except lease.LeaseLost:
                raise
            except Exception as exc:
                return self._after_transient_error(current, retries, exc)
        except lease.LeaseLost:
            metrics.PROCESSING_JOBS.labels("superseded").inc()
            log.warning(
                "processing %s: attempt %d lost its lease (the job was handed on); stopped, nothing stored",
                video_id,
                current.attempt,
                extra={**fields, "event": "processing_superseded"},
            )
            return JobOutcome("superseded")
        metrics.PROCESSING_JOBS.labels("completed").inc()
        for stage in result.stages:
            metrics.PROCESSING_STAGE.labels(stage.name).observe(stage.seconds)
        metrics.PROCESSING_STAGE.labels("total").observe(result.processing_seconds)
        log.info(
            "video %s processed in %.2f s (attempt %d)",
            video_id,
            result.processing_seconds,
            current.attempt,
            extra={**fields, "event": "processing_completed", "seconds": result.processing_seconds},
        )
        if self.events is not None and result.moderation is not None and result.moderation.hash_matches:
            self.events.to_video_owners(
                HashMatchEvent(
                    video_id=video_id,
                    data=HashMatchData(
                        matches=[m.model_dump(mode="json") for m in result.moderation.hash_matches],
                        result_url=f"/v1/videos/{video_id}/result",
                    ),
                )
            )
        if self.events is not None:
            self.events.to_video_owners(
                ProcessingCompleted(
                    video_id=video_id,
                    data=ProcessingCompletedData(
                        processing_seconds=result.processing_seconds,
                        fingerprint=result.fingerprint,
                        duration=result.metadata.duration,
                        result_url=f"/v1/videos/{video_id}/result",
                        flagged=result.moderation is not None and result.moderation.flagged,
                        result=result.model_dump(mode="json"),
                    ),
                )
            )
        return JobOutcome("completed")

    def _log_not_claimed(self, video_id: str, claimed: lease.Claim) -> None:
        """A delivery of a video that is not waiting for a job (a duplicate): nothing to do."""
        if claimed.status is VideoStatus.PROCESSING:
            why = f"being processed by {claimed.holder}"
        else:
            why = claimed.status.value if claimed.status is not None else "gone"
        log.info(
            "processing %s skipped: %s",
            video_id,
            why,
            extra={"video_id": video_id, "event": "processing_skipped"},
        )

    def _after_transient_error(self, current: lease.Lease, retries: int, exc: Exception) -> JobOutcome:
        """Give up after the last retry; otherwise hand the video back as queued, due after the
        backoff (the retry is in the broker; the dispatch timeout counts from when it is due)."""
        processing = self.settings.processing
        video_id = current.video_id
        if retries >= processing.max_retries:
            self.mark_failed(video_id, f"gave up after {retries + 1} attempts: {exc}", current)
            metrics.PROCESSING_JOBS.labels("failed").inc()
            return JobOutcome("failed")
        delay = processing.retry_backoff_seconds * (2**retries)
        with self.db.session() as session:
            lease.settle(session, current)
            session.execute(
                update(Video)
                .where(Video.id == video_id)
                .values(
                    status=VideoStatus.QUEUED,
                    error_message=str(exc)[:2000],
                    dispatched_at=utcnow() + timedelta(seconds=delay),
                )
            )
        metrics.PROCESSING_JOBS.labels("retried").inc()
        log.warning(
            "processing %s failed (attempt %d), retrying in %.1f s: %s",
            video_id,
            current.attempt,
            delay,
            exc,
            extra={"video_id": video_id, "attempt": current.attempt, "event": "processing_retry"},
        )
        return JobOutcome("retry", retry_in=delay)

    def _match_banks(self, result: VideoAnalysisResult) -> None:
        """Match the video's vPDQ against every hash bank; a match flags it, naming bank and entry."""
        if result.hashes is None:
            return
        moderation = self.settings.moderation
        started = time.perf_counter()
        matches = match_video(
            self.db,
            result.hashes.vpdq,
            distance=moderation.match_distance,
            quality=moderation.match_quality,
            percent=moderation.match_percent,
            probe_radius=moderation.bank_probe_radius,
        )
        result.stages.append(StageTiming(name="hash_banks", seconds=round(time.perf_counter() - started, 4)))
        if not matches:
            return
        if result.moderation is None:
            nsfw = NsfwResult(
                status="unavailable", model="open_nsfw", reason="MODERATION_ENABLED is false", threshold=0
            )
            result.moderation = ModerationResult(flagged=False, nsfw=nsfw)
        result.moderation.hash_matches = matches
        result.moderation.flagged = True
        for match in matches:
            label = f" ({match.entry_name})" if match.entry_name else ""
            result.moderation.reasons.append(
                FlagReason(
                    code="hash_match",
                    message=f"matches entry {match.entry_id}{label} of hash bank {match.bank!r}: "
                    f"{match.query_match_percent}% of this video's frames, {match.entry_match_percent}% of the entry's",
                )
            )

    def _progress_writer(self, current: lease.Lease, keeper: lease.LeaseKeeper) -> Any:
        last = [0.0]
        video_id = current.video_id

        def write(stage: str, fraction: float) -> None:
            keeper.check()  # a superseded attempt stops at its next report
            now = time.monotonic()
            if now - last[0] < PROGRESS_EVERY_SECONDS and fraction < 1.0:
                return
            last[0] = now
            percent = round(fraction * 100, 1)
            lease.write_progress(self.db, current, stage, percent)
            if self.events is not None and self.events.progress_due(f"video:{video_id}", final=fraction >= 1.0):
                self.events.to_video_owners(
                    ProcessingProgress(
                        video_id=video_id, data=ProcessingProgressData(stage=stage, progress_percentage=percent)
                    )
                )

        return write

    def _store(self, result: VideoAnalysisResult, model_type: str, current: lease.Lease | None = None) -> None:
        """Store the result once; frame hashes are replaced, never doubled. With ``current``,
        only while that attempt holds the lease (else :class:`LeaseLost`, nothing stored)."""
        fingerprint = int(result.fingerprint, 16)
        with self.db.session() as session:
            if current is not None:
                lease.settle(session, current)
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

    def mark_failed(self, video_id: str, reason: str, current: lease.Lease | None = None) -> None:
        """Fail the video for good; with ``current``, only while that attempt holds the lease."""
        with self.db.session() as session:
            if current is not None:
                lease.settle(session, current)
            session.execute(
                update(Video)
                .where(Video.id == video_id)
                .values(status=VideoStatus.FAILED, error_message=reason[:2000], finished_at=utcnow())
            )
        attempt = {"attempt": current.attempt} if current is not None else {}
        log.warning(
            "processing of %s failed: %s",
            video_id,
            reason,
            extra={"video_id": video_id, "event": "processing_failed", **attempt},
        )
        if self.events is not None:
            self.events.to_video_owners(
                ProcessingFailed(video_id=video_id, data=FailureData(error_code="processing_failed", message=reason))
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

    def result_without_similar(self, principal: Principal, video_id: str) -> VideoAnalysisResult:
        """The stored result of a video ``principal`` may see (409 until there is one)."""
        video = self.owned_video(principal, video_id)
        stored = self.stored_result(video_id)
        if stored is None:
            detail = f": {video.error_message}" if video.status is VideoStatus.FAILED and video.error_message else ""
            raise ResultNotReady(f"Video {video_id!r} is {video.status.value}; it has no result yet{detail}.")
        return stored

    def result(self, principal: Principal, video_id: str) -> VideoAnalysisResult:
        stored = self.result_without_similar(principal, video_id)
        stored.similar_videos = find_similar(
            self.db,
            stored,
            user_id=None if self.settings.processing.similarity_scope == "shared" else principal.user_id,
            max_distance=self.settings.processing.similarity_max_distance,
            min_score=self.settings.processing.similarity_min_score,
        )
        return stored

    def stored_result_json(self, video_id: str) -> dict[str, Any] | None:
        with self.db.session() as session:
            row = session.scalar(
                select(VideoAnalysisResultRow.result).where(VideoAnalysisResultRow.video_id == video_id)
            )
        return dict(row) if row is not None else None

    def stored_result(self, video_id: str) -> VideoAnalysisResult | None:
        row = self.stored_result_json(video_id)
        return VideoAnalysisResult.model_validate(row) if row is not None else None
