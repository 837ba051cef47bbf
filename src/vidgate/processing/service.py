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

Leases (:mod:`vidgate.processing.lease`) are the video's, since the job is: the content's claim
is only as good as the claiming video's current attempt, whose writes (progress, result,
failure, retry) each start by checking it, so a superseded original stores nothing. A video
waiting on another's claim holds no lease (it runs no job); the sweep never queues it again.
If the claimer's worker dies, the sweep queues the claimer, whose next attempt finds its own
claim, analyses and completes the waiters.
"""

from __future__ import annotations

import array
import contextlib
import logging
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, cast

from sqlalchemy import ColumnElement, Connection, Row, Table, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from vidgate import metrics
from vidgate.auth import Principal
from vidgate.config import Settings
from vidgate.db.engine import Database
from vidgate.db.models import (
    AnalysisStatus,
    Content,
    ContentEmbedding,
    FrameHash,
    HashBankFrame,
    Video,
    VideoAnalysisResultRow,
    VideoStatus,
    utcnow,
)
from vidgate.errors import ResultNotReady
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
from vidgate.library.owners import owned_video
from vidgate.moderation.rematch import add_matches
from vidgate.processing import lease
from vidgate.processing.analyser import Analyser, InProcessAnalyser
from vidgate.processing.hashbits import bands, to_signed
from vidgate.processing.models import StageTiming, VideoAnalysisResult
from vidgate.processing.queue import QueueUnavailable, TaskQueue
from vidgate.processing.stages import PictureConfig, PipelineConfig, PipelineError
from vidgate.storage import BlobStore

log = logging.getLogger(__name__)

_VIDEOS = cast(Table, Video.__table__)
# A hand-over's claim and its release, built once (the upload's completion claims in its own transaction).
_CLAIM_HAND_OVER = (
    update(_VIDEOS)
    .where(
        _VIDEOS.c.id == bindparam("video_id"),
        _VIDEOS.c.status == VideoStatus.QUEUED,
        _VIDEOS.c.dispatched_at.is_(None),
    )
    .values(dispatched_at=bindparam("now"))
    .returning(_VIDEOS.c.priority)
)
_RELEASE_HAND_OVER = update(_VIDEOS).where(_VIDEOS.c.id == bindparam("video_id")).values(dispatched_at=None)


def _progress_statement(waiting_on: ColumnElement[bool]) -> Any:
    """An analysis's progress, written to the videos ``waiting_on`` it that are still processing
    (another video's, or this attempt's own: a superseded attempt's video is left alone)."""
    return (
        update(_VIDEOS)
        .where(
            waiting_on,
            _VIDEOS.c.status == VideoStatus.PROCESSING,
            or_(_VIDEOS.c.id != bindparam("of_video"), _VIDEOS.c.attempts == bindparam("attempt")),
        )
        .values(stage=bindparam("new_stage"), progress=bindparam("new_progress"))
        .returning(_VIDEOS.c.id, _VIDEOS.c.user_id)
    )


# Built once: the ORM's bulk UPDATE built and evaluated per report cost ~1 ms of the API's CPU.
_PROGRESS_OF_CONTENT = _progress_statement(_VIDEOS.c.content_id == bindparam("of_content"))

# A job's claim and its result's transaction, built once (as the upload's completion does): the
# ORM's loads, flushes and bulk-UPDATE synchronisation cost the API ~6 ms of CPU per job (a 4
# MiB upload and its job: 46 -> 40 ms, docs/design.md "Ingest round 8").
_CONTENTS = cast(Table, Content.__table__)
_RESULTS = cast(Table, VideoAnalysisResultRow.__table__)
_FRAME_HASHES = cast(Table, FrameHash.__table__)
_EMBEDDINGS = cast(Table, ContentEmbedding.__table__)
_LOCKED_CONTENT = select(_CONTENTS).where(_CONTENTS.c.id == bindparam("content_id")).with_for_update()
# a video's content, locked (content before video, the order upload completion takes them in)
_LOCKED_CONTENT_OF_VIDEO = (
    select(_CONTENTS)
    .where(
        _CONTENTS.c.id == select(_VIDEOS.c.content_id).where(_VIDEOS.c.id == bindparam("video_id")).scalar_subquery()
    )
    .with_for_update()
)
_JOB_VIDEO = select(_VIDEOS.c.user_id, _VIDEOS.c.priority, _VIDEOS.c.processing_options).where(
    _VIDEOS.c.id == bindparam("video_id")
)
_VIDEO_STATUS = select(_VIDEOS.c.status).where(_VIDEOS.c.id == bindparam("video_id"))
_ANALYSIS_STARTED = (
    update(_CONTENTS)
    .where(_CONTENTS.c.id == bindparam("content_id"))
    .values(
        status=AnalysisStatus.PROCESSING,
        analysing_video_id=bindparam("video_id"),
        analyses=func.coalesce(_CONTENTS.c.analyses, 0) + 1,
        started_at=bindparam("now"),
    )
)
_ANALYSIS_COMPLETED = (
    update(_CONTENTS)
    .where(_CONTENTS.c.id == bindparam("content_id"))
    .values(
        status=AnalysisStatus.COMPLETED,
        analysing_video_id=None,
        finished_at=bindparam("now"),
        fingerprint=bindparam("new_fingerprint"),
        error_message=None,
    )
)
_STORED_RESULT = select(_RESULTS.c.result).where(_RESULTS.c.content_id == bindparam("content_id"))
_FRAME_HASHES_OF = delete(_FRAME_HASHES).where(_FRAME_HASHES.c.content_id == bindparam("content_id"))
_INSERT_FRAME_HASH = insert(_FRAME_HASHES)
_EMBEDDING_OF = delete(_EMBEDDINGS).where(_EMBEDDINGS.c.content_id == bindparam("content_id"))
_INSERT_EMBEDDING = insert(_EMBEDDINGS)


def _result_upsert(dialect: str) -> Any:
    """Store the content's one result, or (a redelivered job) replace the stored one's result."""
    statement = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(_RESULTS)
    return statement.on_conflict_do_update(
        index_elements=[_RESULTS.c.content_id],
        set_={"result": statement.excluded.result, "processing_seconds": statement.excluded.processing_seconds},
    )


_STORE_RESULT = {dialect: _result_upsert(dialect) for dialect in ("postgresql", "sqlite")}


def _completing(condition: ColumnElement[bool]) -> Any:
    """Complete the processing videos that match ``condition``, returning (id, owner)."""
    return (
        update(_VIDEOS)
        .where(condition, _VIDEOS.c.status == VideoStatus.PROCESSING)
        .values(
            status=VideoStatus.COMPLETED,
            stage="done",
            progress=100.0,
            finished_at=bindparam("now"),
            error_message=None,
            lease_expires_at=None,
        )
        .returning(_VIDEOS.c.id, _VIDEOS.c.user_id)
    )


_COMPLETE_OF_CONTENT = _completing(_VIDEOS.c.content_id == bindparam("of_content"))
_COMPLETE_VIDEO = _completing(_VIDEOS.c.id == bindparam("of_video"))

PROGRESS_EVERY_SECONDS = 0.5  # progress is written at most this often per job
#: what a video whose content's analysis is reused reports: the pipeline's first and last progress
#: (vidgate.processing.pipeline.analyze: metadata first; embeddings last, after vPDQ, moderation
#: and the pictures, which all finish before it)
REUSED_PROGRESS = (("metadata", 0.05), ("embeddings", 1.0))


@dataclass
class JobOutcome:
    """What one run of a job ended in."""

    status: str  # "completed", "skipped", "failed", "retry", "superseded", "waiting" (another job analyses the content)
    retry_in: float | None = None


class _ProgressWriter:
    """An analysis's ``progress(stage, fraction)``: each report, at most every
    ``PROGRESS_EVERY_SECONDS``, in a transaction that also checks the attempt still holds the
    job (else :class:`LeaseLost`). The last report (fraction 1.0) is kept in :attr:`final`, for
    the result's transaction to write with the completion: the owner hears of it as before, one
    transaction fewer per job."""

    def __init__(
        self,
        service: ProcessingService,
        content_id: str,
        current: lease.Lease,
        keeper: lease.LeaseKeeper | None,
    ) -> None:
        self.service = service
        self.current = current
        self.keeper = keeper
        self.target = {"of_content": content_id, "of_video": current.video_id, "attempt": current.attempt}
        self.last = 0.0
        #: the last report (stage, percent), not written yet: the completing transaction writes it
        self.final: tuple[str, float] | None = None

    def __call__(self, stage: str, fraction: float) -> None:
        if self.keeper is not None:
            self.keeper.check()  # a superseded attempt stops at its next report
        percent = round(fraction * 100, 1)
        if fraction >= 1.0:
            self.final = (stage, percent)
            return
        now = time.monotonic()
        if now - self.last < PROGRESS_EVERY_SECONDS:
            return
        self.last = now
        current = self.current
        with self.service.db.session() as session:
            values = {**self.target, "new_stage": stage, "new_progress": percent}
            waiting = [
                (video_id, user_id) for video_id, user_id in session.connection().execute(_PROGRESS_OF_CONTENT, values)
            ]
            if all(video_id != current.video_id for video_id, _ in waiting):
                raise lease.LeaseLost(f"attempt {current.attempt} of video {current.video_id} was superseded")
            self.service._stage_progress(session, waiting, stage, percent)


class ProcessingService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        blobs: BlobStore,
        queue: TaskQueue | None = None,
        events: EventPublisher | None = None,
        analyser: Analyser | None = None,
    ) -> None:
        self.settings = settings
        #: where analyses run: this process, or an analysis child (:mod:`vidgate.processing.analyser`)
        self.analyser: Analyser = analyser or InProcessAnalyser()
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

    def close(self) -> None:
        """End the analysis child, if one runs (after the queue stopped: no job is running)."""
        self.analyser.close()

    # ------------------------------------------------------------------ queueing
    @property
    def takes_jobs(self) -> bool:
        """Whether this process hands videos to a queue (``vidgate serve``, a worker's beat)."""
        return self.queue is not None

    @property
    def starts_here(self) -> bool:
        """Whether a job handed over starts in this process at once (the in-process queue)."""
        return bool(getattr(self.queue, "starts_here", False))

    def dispatch(self, video_id: str) -> bool:
        """Offer one queued video to the queue; False (and still queued) when the broker is down."""
        if self.queue is None:
            return False
        with self.db.session() as session:
            # Claim first: two dispatchers (the upload and the periodic loop) never both enqueue.
            claimed = session.execute(_CLAIM_HAND_OVER, {"video_id": video_id, "now": utcnow()}).first()
            if claimed is None:
                return False
        return self.enqueue_claimed(video_id, claimed.priority)

    def enqueue_claimed(self, video_id: str, priority: int) -> bool:
        """Put a video whose hand-over was claimed (``dispatched_at`` set, committed) on the queue;
        when the broker is down the claim is released (the dispatcher offers it again). A claim
        whose hand-over never happens (the process died first) lapses after
        PROCESSING_DISPATCH_TIMEOUT_SECONDS (:func:`vidgate.processing.dispatch.resend_stale`)."""
        if self.queue is None:
            return False
        try:
            self.queue.enqueue(video_id, priority)
        except QueueUnavailable as exc:
            self.broker_reachable = False
            log.warning("video %s stays queued: %s", video_id, exc.message)
            with self.db.session() as session:
                session.execute(_RELEASE_HAND_OVER, {"video_id": video_id})
            return False
        self.broker_reachable = True
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
        with self.db.reading() as session:  # a read: each hand-over claims its video (dispatch)
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
    def run(self, video_id: str, retries: int = 0, worker: str | None = None) -> JobOutcome:
        """Process one owner's video under a lease (see :mod:`vidgate.processing.lease`). Its
        content is analysed by the first job that claims it; a job that finds the analysis stored
        reuses it, one that finds it running waits (the running job completes every waiting
        video). Transient errors ask for a retry (with backoff) until ``PROCESSING_MAX_RETRIES``
        are used up (``retries``: this job's earlier transient failures); a video the decoder
        cannot read fails at once. The attempt logged and stored is the video's own."""
        processing = self.settings.processing
        holder = worker or lease.process_name()
        with self.db.session() as session:
            connection = session.connection()
            content = _lock_content_of(connection, video_id)
            claimed = lease.claim(session, video_id, holder, processing.lease_seconds, processing.job_timeout_seconds)
            if content is None or claimed.lease is None:
                self._log_not_claimed(video_id, claimed)
                return JobOutcome("skipped")
            current = claimed.lease
            video = connection.execute(_JOB_VIDEO, {"video_id": video_id}).one()
            if content.status is AnalysisStatus.COMPLETED:
                action = "reuse"
            elif content.status is AnalysisStatus.PROCESSING and _claim_alive(connection, content, video_id):
                action = "wait"
                # No job runs for a waiting video: release its lease so the sweep leaves it be.
                lease.settle(session, current)
            else:
                action = "analyse"
                connection.execute(_ANALYSIS_STARTED, {"content_id": content.id, "video_id": video_id, "now": utcnow()})
            content_id, content_hash = content.id, content.content_hash
            storage_key = content.storage_key
            options = dict(video.processing_options or {})
            if self.events is not None:  # in the claim's transaction: told if and only if it started
                self.events.to_user(
                    ProcessingInitiated(
                        video_id=video_id,
                        data=ProcessingInitiatedData(priority=video.priority, attempt=current.attempt),
                    ),
                    video.user_id,
                    session,
                )
        fields = {"video_id": video_id, "attempt": current.attempt, "worker": holder}
        log.info(
            "processing %s started (attempt %d)",
            video_id,
            current.attempt,
            extra={**fields, "event": "processing_initiated"},
        )
        try:
            if action == "reuse":
                # The events of a short analysis (its first and last progress report), so reuse
                # looks like a first processing to the owner; only its speed differs.
                self._complete_waiting(content_id, current, only=True, progress=REUSED_PROGRESS)
                metrics.PROCESSING_JOBS.labels("reused").inc()
                return JobOutcome("completed")
            if action == "wait":
                log.info(
                    "video %s waits for the analysis of its content %s",
                    video_id,
                    content_id,
                    extra={**fields, "content_id": content_id, "event": "processing_waiting"},
                )
                return JobOutcome("waiting")
            return self._analyse(current, content_id, content_hash, storage_key, options, retries, fields)
        except lease.LeaseLost:
            metrics.PROCESSING_JOBS.labels("superseded").inc()
            log.warning(
                "processing %s: attempt %d lost its lease (the job was handed on); stopped, nothing stored",
                video_id,
                current.attempt,
                extra={**fields, "event": "processing_superseded"},
            )
            return JobOutcome("superseded")

    def _analyse(
        self,
        current: lease.Lease,
        content_id: str,
        content_hash: str,
        storage_key: str,
        options: dict[str, Any],
        retries: int,
        fields: dict[str, Any],
    ) -> JobOutcome:
        """Run the pipeline over the content while the lease is renewed, then store the result
        and complete every video waiting on it (or fail them, or hand the job back for a retry).
        Raises :class:`~vidgate.processing.lease.LeaseLost` if the attempt was superseded."""
        processing = self.settings.processing
        model_type = str(options.get("model_type") or processing.default_model_type)
        try:
            renew_seconds = processing.lease_renew_seconds
            with tempfile.TemporaryDirectory(dir=self.blobs.scratch_dir(), prefix=".pictures-") as pictures:
                with (
                    lease.LeaseKeeper(self.db, current, processing.lease_seconds, renew_seconds) as keeper,
                    self._stored_file(storage_key) as source,
                ):
                    report = self._progress_writer(content_id, current, keeper=keeper)
                    result = self.analyser.analyse(
                        source,
                        video_id=content_id,  # the stored analysis names no owner's video; readers put theirs in
                        content_hash=content_hash,
                        model_type=model_type,
                        config=self.config,
                        progress=report,
                        pictures_dir=Path(pictures),
                    )
                self._match_banks(result)  # derived from the bytes too: the flag is the content's
                done = self._store(
                    result, content_id, model_type, current, pictures=Path(pictures), final_progress=report.final
                )
        except PipelineError as exc:
            self.mark_failed(content_id, str(exc), current)
            metrics.PROCESSING_JOBS.labels("failed").inc()
            return JobOutcome("failed")
        except lease.LeaseLost:
            raise
        except Exception as exc:
            return self._after_transient_error(current, content_id, retries, exc)
        metrics.PROCESSING_JOBS.labels("completed").inc()
        for stage in result.stages:
            metrics.PROCESSING_STAGE.labels(stage.name).observe(stage.seconds)
        metrics.PROCESSING_STAGE.labels("total").observe(result.processing_seconds)
        log.info(
            "content %s of video %s analysed in %.2f s (attempt %d)",
            content_id,
            current.video_id,
            result.processing_seconds,
            current.attempt,
            extra={
                **fields,
                "content_id": content_id,
                "event": "content_analysed",
                "seconds": result.processing_seconds,
            },
        )
        self._log_completed(content_id, done, reused=False)
        return JobOutcome("completed")

    @contextlib.contextmanager
    def _stored_file(self, storage_key: str) -> Iterator[Path | BinaryIO]:
        """The stored video to analyse: its local file, or (a remote store: no shared disk) a
        seekable reader over ranged GETs that holds one read-ahead window
        (``STORAGE_S3_READ_BUFFER``). Missing (storage not mounted, being restored) or an
        unreachable store: a transient error, retried."""
        path = self.blobs.local_path(storage_key)
        if path is not None:
            if not path.is_file():
                raise FileNotFoundError(f"the stored file {path} is missing")
            yield path
            return
        with self.blobs.open(storage_key) as reader:
            yield reader

    def _log_not_claimed(self, video_id: str, claimed: lease.Claim) -> None:
        """A delivery of a video that is not waiting for a job (a duplicate): nothing to do."""
        if claimed.status is VideoStatus.PROCESSING and claimed.holder is None:
            why = "waiting for the analysis of its content by another video's job"
        elif claimed.status is VideoStatus.PROCESSING:
            why = f"being processed by {claimed.holder}"
        else:
            why = claimed.status.value if claimed.status is not None else "gone"
        log.info(
            "processing %s skipped: %s",
            video_id,
            why,
            extra={"video_id": video_id, "event": "processing_skipped"},
        )

    def _after_transient_error(self, current: lease.Lease, content_id: str, retries: int, exc: Exception) -> JobOutcome:
        """Give up after the last retry; otherwise hand the video back as queued, due after the
        backoff (the retry is in the broker; the dispatch timeout counts from when it is due).
        The content's claim stays this video's, so its waiters keep waiting for the retry."""
        processing = self.settings.processing
        video_id = current.video_id
        if retries >= processing.max_retries:
            self.mark_failed(content_id, f"gave up after {retries + 1} attempts: {exc}", current)
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
        """Match the content's vPDQ against every hash bank; a match flags it, naming bank and
        entry (derived from the bytes alone, so every owner's video of them is flagged)."""
        if result.hashes is None:
            return
        moderation = self.settings.moderation
        started = time.perf_counter()
        with self.db.read_engine.connect() as connection:  # SQLite: no write lock for a read
            banked = connection.execute(select(HashBankFrame.entry_id).limit(1)).first() is not None
        if not banked:  # no bank holds a frame: nothing to match, and no index (NumPy) to build
            result.stages.append(StageTiming(name="hash_banks", seconds=round(time.perf_counter() - started, 4)))
            return
        from vidgate.moderation.banks import match_video  # the bank index is NumPy arrays: only with banks

        matches = match_video(
            self.db,
            result.hashes.vpdq,
            distance=moderation.match_distance,
            quality=moderation.match_quality,
            percent=moderation.match_percent,
            max_index_hashes=moderation.bank_index_max_hashes,
        )
        result.stages.append(StageTiming(name="hash_banks", seconds=round(time.perf_counter() - started, 4)))
        if matches:
            add_matches(result, matches)

    def _progress_writer(
        self, content_id: str, current: lease.Lease, keeper: lease.LeaseKeeper | None = None
    ) -> _ProgressWriter:
        """Writes an analysis's progress to the videos waiting on it, while ``current`` is the
        job's attempt (else :class:`LeaseLost`)."""
        return _ProgressWriter(self, content_id, current, keeper)

    def _stage_progress(self, session: Session, waiting: Sequence[tuple[str, str]], stage: str, percent: float) -> None:
        """Each owner's ``processing_progress`` of their own video (throttled; the final one always)."""
        if self.events is None:
            return
        for video_id, user_id in waiting:  # every owner hears of their own video only
            if self.events.progress_due(f"video:{video_id}", final=percent >= 100.0):
                self.events.to_user(
                    ProcessingProgress(
                        video_id=video_id,
                        data=ProcessingProgressData(stage=stage, progress_percentage=percent),
                    ),
                    user_id,
                    session,
                )

    def _store(
        self,
        result: VideoAnalysisResult,
        content_id: str,
        model_type: str,
        current: lease.Lease | None = None,
        pictures: Path | None = None,
        final_progress: tuple[str, float] | None = None,
    ) -> list[tuple[str, str]]:
        """Store the content's analysis once (frame hashes are replaced, never doubled) and
        complete every video waiting on it, in one transaction. With ``current``, only while
        that attempt holds the lease (else :class:`LeaseLost`, nothing stored). Returns the
        completed videos (id, owner), each owner told in this transaction: of the analysis's
        ``final_progress`` (stage, percent: its last report, which waited for this) first.

        The files in ``pictures`` (poster, storyboard: derived from the bytes, shared by every
        owner) go into the blob store last in that transaction, under the content's row lock,
        like a fenced write: a delete of the content takes that lock first and removes the
        derived files after its commit, so it either came before (this finds no content, or
        a superseded attempt, and puts nothing) or waits and then removes them with the rest.
        No picture outlives its content, whatever the order (library/deletion.py)."""
        stored = result.model_dump(mode="json")
        with self.db.session() as session:
            connection = session.connection()
            content = _lock_content(connection, content_id)  # content before video, as uploads take them
            if content is None:  # deleted with its last video while this job ran: store nothing
                raise lease.LeaseLost(f"the content {content_id} was deleted during its analysis")
            if current is not None:
                lease.settle(session, current)
            dialect = "postgresql" if connection.dialect.name == "postgresql" else "sqlite"
            stored_result = {
                "content_id": content_id,
                "pipeline_version": result.pipeline_version,
                "model_type": model_type,
                "result": stored,
                "processing_seconds": result.processing_seconds,
            }
            connection.execute(_STORE_RESULT[dialect], stored_result)
            connection.execute(_FRAME_HASHES_OF, {"content_id": content_id})
            frames = [_frame_hash_row(content_id, sample.timestamp, sample.phash) for sample in result.samples]
            if frames:
                connection.execute(_INSERT_FRAME_HASH, frames)
            _store_embedding(connection, content_id, result)
            now = utcnow()
            completed = {
                "content_id": content_id,
                "now": now,
                "new_fingerprint": to_signed(int(result.fingerprint, 16)),
            }
            connection.execute(_ANALYSIS_COMPLETED, completed)
            done = _complete_processing(connection, _COMPLETE_OF_CONTENT, {"of_content": content_id, "now": now})
            if final_progress is not None:
                self._stage_progress(session, done, *final_progress)
            self._stage_completed(session, done, stored, now)
            if pictures is not None:  # the database's errors came first (each statement ran): then nothing was put
                for made in sorted(pictures.iterdir()):
                    self.blobs.put_derived(content.content_hash, made.name, made)
        return done

    def _complete_waiting(
        self, content_id: str, current: lease.Lease, only: bool = False, progress: Sequence[tuple[str, float]] = ()
    ) -> None:
        """Complete the videos waiting on the content's stored analysis (with ``only``, just the
        job's own video), each with its owner's own processing_completed event, after the
        ``progress`` events (stage, fraction) given; only while ``current`` holds the lease
        (else :class:`LeaseLost`). One transaction."""
        with self.db.session() as session:
            connection = session.connection()
            _lock_existing_content(connection, content_id)
            lease.settle(session, current)
            stored = connection.execute(_STORED_RESULT, {"content_id": content_id}).scalar()
            now = utcnow()
            if only:
                done = _complete_processing(connection, _COMPLETE_VIDEO, {"of_video": current.video_id, "now": now})
            else:
                done = _complete_processing(connection, _COMPLETE_OF_CONTENT, {"of_content": content_id, "now": now})
            for stage, fraction in progress:
                self._stage_progress(session, done, stage, round(fraction * 100, 1))
            self._stage_completed(session, done, dict(stored) if stored is not None else None, now)
        self._log_completed(content_id, done, reused=only)

    @staticmethod
    def _log_completed(content_id: str, done: list[tuple[str, str]], reused: bool) -> None:
        for video_id, _ in done:
            log.info(
                "video %s processed%s",
                video_id,
                " (stored analysis reused)" if reused else "",
                extra={"video_id": video_id, "content_id": content_id, "event": "processing_completed"},
            )

    def _stage_completed(
        self, session: Session, done: list[tuple[str, str]], stored: dict[str, Any] | None, now: datetime
    ) -> None:
        """Tell each owner of a completed video of their own video (and nothing else), in the
        transaction that completed it."""
        if stored is None or self.events is None:
            return
        for video_id, user_id in done:
            result = owner_result(dict(stored), video_id, now)
            moderation = result.moderation
            if moderation is not None and moderation.hash_matches:  # the content's flag, told per owner
                self.events.to_user(
                    HashMatchEvent(
                        video_id=video_id,
                        data=HashMatchData(
                            matches=[m.model_dump(mode="json") for m in moderation.hash_matches],
                            result_url=f"/v1/videos/{video_id}/result",
                        ),
                    ),
                    user_id,
                    session,
                )
            self.events.to_user(
                ProcessingCompleted(
                    video_id=video_id,
                    data=ProcessingCompletedData(
                        processing_seconds=result.processing_seconds,
                        fingerprint=result.fingerprint,
                        duration=result.metadata.duration,
                        result_url=f"/v1/videos/{video_id}/result",
                        flagged=moderation is not None and moderation.flagged,
                        result=result.model_dump(mode="json"),
                    ),
                ),
                user_id,
                session,
            )

    def mark_failed(self, content_id: str, reason: str, current: lease.Lease | None = None) -> None:
        """The content cannot be analysed: it and every video waiting on it fail, each owner told
        of their own video. With ``current``, only while that attempt holds the lease (else
        :class:`LeaseLost`, nothing written)."""
        with self.db.session() as session:
            _lock_existing_content(session.connection(), content_id)
            if current is not None:
                lease.settle(session, current)
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
                .values(status=VideoStatus.FAILED, error_message=reason[:2000], finished_at=now, lease_expires_at=None)
                .returning(Video.id, Video.user_id)
            ).all()
            for video_id, user_id in failed:
                if self.events is not None:
                    self.events.to_user(
                        ProcessingFailed(
                            video_id=video_id, data=FailureData(error_code="processing_failed", message=reason)
                        ),
                        user_id,
                        session,
                    )
        attempt = {"attempt": current.attempt} if current is not None else {}
        for video_id, _ in failed:
            log.warning(
                "processing of %s failed: %s",
                video_id,
                reason,
                extra={"video_id": video_id, "content_id": content_id, "event": "processing_failed", **attempt},
            )

    # ------------------------------------------------------------------ reading
    def owned_video(self, principal: Principal, video_id: str) -> tuple[Video, Content]:
        """The video and its content, if the video is ``principal``'s (anyone else's is not found)."""
        with self.db.session() as session:
            owned = owned_video(session, principal.user_id, video_id)  # ownership: vidgate.library.owners
            session.expunge_all()
            return owned.video, owned.content

    def result_without_similar(self, principal: Principal, video_id: str) -> VideoAnalysisResult:
        """The stored result of a video ``principal`` owns, as theirs (409 until there is one)."""
        return self._owned_result(principal, video_id)[0]

    def _owned_result(self, principal: Principal, video_id: str) -> tuple[VideoAnalysisResult, Content]:
        video, content = self.owned_video(principal, video_id)
        stored = self.owner_result(video_id)
        if stored is None:
            detail = f": {video.error_message}" if video.status is VideoStatus.FAILED and video.error_message else ""
            raise ResultNotReady(f"Video {video_id!r} is {video.status.value}; it has no result yet{detail}.")
        return stored, content

    def result(self, principal: Principal, video_id: str) -> VideoAnalysisResult:
        # Imported on the first result served: the search is NumPy, which uploads never need.
        from vidgate.processing.similarity import find_similar

        stored, content = self._owned_result(principal, video_id)
        stored.similar_videos = find_similar(
            self.db,
            stored,
            content_id=content.id,
            user_id=principal.user_id,
            shared=self.settings.processing.similarity_scope == "shared",
            max_distance=self.settings.processing.similarity_max_distance,
            min_score=self.settings.processing.similarity_min_score,
            min_run=self.settings.processing.similarity_min_run,
            embedding_min_cosine=self.settings.processing.similarity_embedding_min_cosine,
            embedding_max_videos=self.settings.processing.similarity_embedding_max_videos,
        )
        return stored

    def owner_result(self, video_id: str, session: Session | None = None) -> VideoAnalysisResult | None:
        """The stored analysis as the video's owner sees it (their video id, the time their video
        completed), once their video has completed; None before. Read in ``session`` when given
        (a transaction that stages an event)."""
        query = (
            select(VideoAnalysisResultRow.result, Video.finished_at)
            .join(Video, Video.content_id == VideoAnalysisResultRow.content_id)
            .where(Video.id == video_id, Video.status == VideoStatus.COMPLETED)
        )
        if session is not None:
            row = session.execute(query).first()
        else:
            with self.db.session() as own:
                row = own.execute(query).first()
        if row is None:
            return None
        stored, finished_at = row
        return owner_result(dict(stored), video_id, finished_at or utcnow())

    def owner_result_json(self, video_id: str, session: Session | None = None) -> dict[str, Any] | None:
        result = self.owner_result(video_id, session)
        return result.model_dump(mode="json") if result is not None else None


def _lock_content_of(connection: Connection, video_id: str) -> Row[Any] | None:
    """Lock a video's content (before the video: the order upload completion takes them in, so
    the two never wait for each other; PostgreSQL would abort one as a deadlock)."""
    return connection.execute(_LOCKED_CONTENT_OF_VIDEO, {"video_id": video_id}).one_or_none()


def _lock_content(connection: Connection, content_id: str) -> Row[Any] | None:
    return connection.execute(_LOCKED_CONTENT, {"content_id": content_id}).one_or_none()


def _lock_existing_content(connection: Connection, content_id: str) -> Row[Any]:
    """:func:`_lock_content` of a content that must exist (else ``NoResultFound``, as before)."""
    return connection.execute(_LOCKED_CONTENT, {"content_id": content_id}).one()


def _claim_alive(connection: Connection, content: Row[Any], video_id: str) -> bool:
    """Whether another video's job holds the content's analysis (a claim left by a video that
    is no longer waiting, or by this very video's earlier delivery, is taken over)."""
    holder = content.analysing_video_id
    if holder is None or holder == video_id:
        return False
    status = connection.execute(_VIDEO_STATUS, {"video_id": holder}).scalar()
    return status in (VideoStatus.QUEUED, VideoStatus.PROCESSING)


def _frame_hash_row(content_id: str, timestamp: float, phash: str) -> dict[str, Any]:
    """A sampled frame's hash as stored: signed 64 bits, and its four 16-bit bands."""
    value = int(phash, 16)
    b0, b1, b2, b3 = bands(value)
    return {
        "content_id": content_id,
        "timestamp": timestamp,
        "hash": to_signed(value),
        "band0": b0,
        "band1": b1,
        "band2": b2,
        "band3": b3,
    }


def _store_embedding(connection: Connection, content_id: str, result: VideoAnalysisResult) -> None:
    """The video embedding, for the near-duplicate search's second stage (replaced, never doubled)."""
    connection.execute(_EMBEDDING_OF, {"content_id": content_id})
    vector = result.embeddings.video_embedding
    if result.embeddings.status == "ok" and vector is not None:
        data = array.array("f", vector).tobytes()  # float32, this machine's byte order (as NumPy's)
        row = {"content_id": content_id, "model_type": result.embeddings.model_type, "vector": data}
        connection.execute(_INSERT_EMBEDDING, row)


def _lock_video_and_content(session: Session, video_id: str) -> tuple[Video, Content] | None:
    """Lock a video's content, then the video (see :func:`_lock_content_of`), as ORM objects."""
    content_id = session.scalar(select(Video.content_id).where(Video.id == video_id))
    if content_id is None:
        return None
    content = session.get_one(Content, content_id, with_for_update=True, populate_existing=True)
    video = session.get_one(Video, video_id, with_for_update=True, populate_existing=True)
    return video, content


def _complete_processing(connection: Connection, statement: Any, values: dict[str, Any]) -> list[tuple[str, str]]:
    """Complete the processing videos that ``statement`` (one of :func:`_completing`) matches; their (id, owner)."""
    return [(video_id, user_id) for video_id, user_id in connection.execute(statement, values)]


def owner_result(stored: dict[str, Any], video_id: str, completed_at: datetime) -> VideoAnalysisResult:
    """A content's stored analysis as one owner's result: their video id, and the time their
    video completed (not when the bytes were first analysed, which could tell of another owner)."""
    result = VideoAnalysisResult.model_validate(stored)
    return result.model_copy(update={"video_id": video_id, "created_at": completed_at})
