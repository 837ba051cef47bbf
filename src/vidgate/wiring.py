"""The composition root: every service built once, from the settings, in one place.

:func:`build_services` is the only code that picks implementations (file or Redis locks, local
or Redis event bus, inline or Celery queue) and hands each step of an upload what it depends
on. The API (:mod:`vidgate.app`), the CLI and the Celery worker (:mod:`vidgate.processing.worker`)
all start here; nothing below imports this module, so there is no way round to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vidgate.auth import KeyCache
from vidgate.config import Settings
from vidgate.db.engine import Database
from vidgate.events.bus import EventBus, LocalBus, RedisBus
from vidgate.events.hub import Hub
from vidgate.events.publisher import EventPublisher
from vidgate.events.webhooks import WebhookOutbox
from vidgate.processing.analyser import ChildAnalyser, ChildLimits
from vidgate.processing.queue import InlineQueue, TaskQueue
from vidgate.processing.service import ProcessingService
from vidgate.storage import BlobStore, LocalBlobStore, LocalPartStore, PartStore
from vidgate.uploads.chunked import ChunkedUploads
from vidgate.uploads.cleanup import Cleanup
from vidgate.uploads.completion import Completion
from vidgate.uploads.ending import Endings
from vidgate.uploads.frontier import HashFrontier
from vidgate.uploads.locks import FileLocker, Locker, RedisLocker
from vidgate.uploads.records import Records
from vidgate.uploads.step import UploadDeps
from vidgate.uploads.tus import TusService
from vidgate.uploads.tus_create import TusCreation
from vidgate.uploads.tus_store import TusStore
from vidgate.uploads.writing import WritePath
from vidgate.validation.pipeline import FileValidator


@dataclass
class Services:
    """Everything the app wires at start-up (see :func:`build_services`)."""

    settings: Settings
    db: Database
    uploads: ChunkedUploads
    tus: TusService
    tus_creation: TusCreation
    cleanup: Cleanup
    locker: Locker
    blobs: BlobStore
    processing: ProcessingService
    queue: TaskQueue | None
    bus: EventBus | None
    events: EventPublisher
    keys: KeyCache
    hub: Hub | None = None
    warmed_up: bool = False  # set once start-up warm-up ended (see vidgate.app._warm_up); /ready waits for it
    warm_up_failure: str | None = None  # which warm-up step failed and why; /ready reports it

    def close(self) -> None:
        if self.queue is not None:
            self.queue.close()
        self.processing.close()
        if self.bus is not None:
            self.bus.close()
        self.db.dispose()


def build_services(settings: Settings, *, start_queue: bool = False) -> Services:
    """Wire everything. ``start_queue`` starts the task queue this process feeds jobs into (the
    API server and Celery workers do; CLI commands do not)."""
    db = Database(settings.database_url, echo=settings.database.echo)
    root = settings.storage_dir
    blobs = make_blob_store(settings)  # STORAGE_BACKEND: local disk or an S3 bucket
    bus = make_bus(settings)
    events = EventPublisher(
        bus,
        db,
        progress_interval=settings.websocket.progress_interval_seconds,
        webhooks=WebhookOutbox(db, settings.webhook),
    )
    processing = ProcessingService(settings, db, blobs, events=events)
    events.result_lookup = processing.owner_result_json
    queue: TaskQueue | None = None
    if start_queue:
        queue = make_queue(settings, processing)
        processing.queue = queue

    locker = make_locker(settings, root)
    deps = UploadDeps(settings, db, make_part_store(settings, db, blobs), locker, HashFrontier())
    records = Records(settings, db, events)
    endings = Endings(deps, records)
    validator = FileValidator(settings.validation)
    completion = Completion(deps, blobs, validator, records, endings, dispatcher=processing)
    writes = WritePath(deps, endings)
    tus_store = TusStore(deps, completion)
    return Services(
        settings=settings,
        db=db,
        uploads=ChunkedUploads(deps, writes, records, completion, endings),
        tus=TusService(deps, writes, records, endings, tus_store),
        tus_creation=TusCreation(deps, records, completion, tus_store),
        cleanup=Cleanup(deps, completion, endings),
        locker=locker,
        blobs=blobs,
        processing=processing,
        queue=queue,
        bus=bus,
        events=events,
        keys=KeyCache(db, settings.auth.cache_seconds),
    )


def make_blob_store(settings: Settings) -> BlobStore:
    """The blob store of ``STORAGE_BACKEND`` (no request is made: :meth:`BlobStore.check` does)."""
    if settings.storage.backend == "s3":
        # Imported here for start-up time and memory, not for a cycle: boto3 costs the
        # embedded default (local disk) ~25 MiB it never needs.
        from vidgate.storage.s3 import S3BlobStore

        return S3BlobStore(settings.storage)
    return LocalBlobStore(settings.storage_dir)


def make_part_store(settings: Settings, db: Database, blobs: BlobStore) -> PartStore:
    """Where uploads in progress live: S3 multipart uploads in the bucket with STORAGE_BACKEND=s3
    (unless STORAGE_PARTS=local), else part files under STORAGE_DIR."""
    storage = settings.storage
    if storage.backend == "s3" and storage.parts == "backend":
        # imported here for the same reason as in make_blob_store (boto3 only with S3)
        from vidgate.db.upload_ids import SessionUploadIds
        from vidgate.storage.s3 import S3BlobStore
        from vidgate.storage.s3_parts import S3PartStore

        bucket = blobs if isinstance(blobs, S3BlobStore) else S3BlobStore(storage)
        return S3PartStore(
            bucket,
            SessionUploadIds(db),
            settings.storage_dir,
            max_file_size=int(settings.upload.max_file_size),
        )
    return LocalPartStore(settings.storage_dir)


def make_locker(settings: Settings, root: Path) -> Locker:
    if settings.upload_locks == "redis":
        fallback = FileLocker(root / "locks")
        return RedisLocker(
            settings.websocket.redis_url or settings.celery.broker_url, fallback, shared_parts=settings.parts_in_bucket
        )
    return FileLocker(root / "locks")


def make_bus(settings: Settings) -> EventBus:
    ws = settings.websocket
    if settings.event_bus == "redis":
        return RedisBus(ws.redis_url or settings.celery.broker_url)
    return LocalBus()


def make_queue(settings: Settings, processing: ProcessingService) -> TaskQueue:
    if settings.processing.queue == "celery":
        # Imported here for start-up time, not for a cycle (celery_queue imports nothing of
        # vidgate's wiring): Celery, kombu and redis cost ~0.3 s of CPU the embedded default never needs.
        from vidgate.processing.celery_queue import CeleryQueue

        return CeleryQueue(settings)

    if settings.processing.analysis == "child":  # the API process keeps no decoder nor model
        processing.analyser = ChildAnalyser(
            ChildLimits(
                memory_bytes=settings.processing.analysis_memory_mb << 20,
                nice=settings.processing.analysis_nice,
                idle_seconds=settings.processing.analysis_idle_seconds,
            )
        )

    def job(video_id: str, attempt: int) -> float | None:
        return processing.run(video_id, attempt).retry_in

    return InlineQueue(job, settings.processing.max_concurrent_jobs)
