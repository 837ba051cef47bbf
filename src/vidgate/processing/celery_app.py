"""Celery on Redis for the distributed mode (``vidgate worker``), with the seed's task names.

Tasks are thin and idempotent: they take ids, re-read the database, and are acknowledged
only after they finish (``acks_late``), so a pool process killed mid-job leaves its job to be
delivered again (``task_reject_on_worker_lost``). A worker that dies whole is noticed sooner
than the Redis visibility timeout (twice the longest job): its job's lease runs out and the
dispatcher hands the video on (:mod:`vidgate.processing.lease`). Priority 1-10 maps to Redis
priority steps (Redis runs the lowest step first).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init
from celery.worker.consumer import Consumer
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from vidgate.config import Settings, load_settings
from vidgate.events.schema import from_wire, to_wire
from vidgate.processing.queue import QueueUnavailable

log = logging.getLogger(__name__)

PROCESS_TASK = "process_video_async"
SWEEP_TASK = "sweep_processing_jobs"


def redis_priority(priority: int, settings: Settings) -> int:
    """vidgate 10 (most urgent) -> Redis step 0 (served first); vidgate 1 -> step 9."""
    processing = settings.processing
    span = max(1, processing.max_priority - processing.min_priority)
    return round(9 * (processing.max_priority - priority) / span)


def create_celery(settings: Settings) -> Celery:
    app = Celery("vidgate", broker=settings.celery.broker_url, backend=settings.celery.result_backend)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=settings.processing.max_concurrent_jobs,
        task_serializer="json",
        accept_content=["json"],
        result_expires=24 * 3600,
        task_default_priority=redis_priority(settings.processing.default_priority, settings),
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        broker_transport_options={
            "visibility_timeout": int(settings.processing.job_timeout_seconds * 2),
            "queue_order_strategy": "priority",
            "priority_steps": list(range(10)),
            "sep": ":",
            # publishing: one quick retry, then QueueUnavailable (the dispatcher offers it again),
            # so an upload during a Redis outage is not held up for seconds
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.2,
        },
        task_time_limit=int(settings.processing.job_timeout_seconds),
        # the consumer reconnects to a lost broker every PROCESSING_BROKER_RETRY_SECONDS
        worker_consumer="vidgate.processing.celery_app:QuickReconnectConsumer",
        beat_schedule={
            "cleanup-expired-sessions": {
                "task": "cleanup_expired_sessions",
                "schedule": settings.upload.cleanup_interval_seconds,
            },
            "sweep-processing-jobs": {
                "task": SWEEP_TASK,
                "schedule": settings.processing.dispatch_interval_seconds,
                # ahead of every job (Redis step 0); a sweep that waited a whole interval is dropped
                "options": {"priority": 0, "expires": settings.processing.dispatch_interval_seconds},
            },
        },
    )
    return app


class QuickReconnectConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer, reconnecting to a lost broker every PROCESSING_BROKER_RETRY_SECONDS.

    Celery retries after 2, 4, 6 ... s (up to 30 s, fixed in its code), so after a 20 s Redis
    outage jobs resumed only ~11 s after Redis was back; this retries at a fixed short interval."""

    def ensure_connected(self, conn: Any) -> Any:
        interval = settings.processing.broker_retry_seconds
        ensure_connection = conn.ensure_connection

        def quickly(*args: Any, **kwargs: Any) -> Any:
            kwargs.update(interval_start=interval, interval_step=0, interval_max=interval)
            return ensure_connection(*args, **kwargs)

        conn.ensure_connection = quickly
        return super().ensure_connected(conn)


settings = load_settings()
app = create_celery(settings)
_services: Any = None


def services() -> Any:
    """The worker's services, built once per worker process (after the fork)."""
    global _services
    if _services is None:
        from vidgate.app import build_services

        _services = build_services(settings, start_queue=True)
    return _services


@worker_process_init.connect
def _reset_after_fork(**_: Any) -> None:
    global _services
    _services = None  # connections must not be shared with the parent


class TransientProcessingError(Exception):
    """A job failed for a reason that may pass (retried with backoff)."""


@app.task(name=PROCESS_TASK, bind=True, acks_late=True, max_retries=None, ignore_result=True)
def process_video_async(self: Task, video_id: str) -> str:
    """Analyse one stored video and store its result (once), under a lease in this worker's name."""
    outcome = services().processing.run(video_id, self.request.retries, worker=self.request.hostname)
    if outcome.retry_in is not None:
        raise self.retry(countdown=outcome.retry_in, exc=TransientProcessingError(video_id))
    return str(outcome.status)


@app.task(name="process_video_batch")
def process_video_batch(video_ids: list[str]) -> int:
    """Queue many videos at once (each as its own job, with its own priority)."""
    processing = services().processing
    return sum(1 for video_id in video_ids if processing.requeue(video_id))


@app.task(name="cleanup_expired_sessions")
def cleanup_expired_sessions() -> dict[str, int]:
    """Expire old sessions and sweep orphans, then the library (RETENTION_DAYS; on the beat schedule)."""
    from vidgate.library.retention import sweep_library

    return {**services().uploads.cleanup().model_dump(), **sweep_library(services()).model_dump()}


@app.task(name=SWEEP_TASK, ignore_result=True)
def sweep_processing_jobs() -> dict[str, Any]:
    """The dispatcher round on the beat schedule: jobs whose lease ran out, hand-overs the broker
    lost, videos not handed over yet (see :mod:`vidgate.processing.dispatch`)."""
    from vidgate.processing.dispatch import sweep

    return sweep(services().processing).model_dump()


@app.task(name="send_websocket_notification")
def send_websocket_notification(event: dict[str, Any]) -> dict[str, Any]:
    """Store an event (the envelope of :mod:`vidgate.events.schema`, with ``audience``) and publish
    it through the worker's event bus to every API process's sockets; returns the first
    receiver's copy, numbered in that user's stream."""
    parsed = from_wire(json.dumps(event))
    stored = services().events.to_audience(parsed)
    if stored is None:
        raise ValueError("the event names no audience")
    published: dict[str, Any] = json.loads(to_wire(stored))
    return published


class CeleryQueue:
    """``TaskQueue`` over Celery: enqueueing fails fast (no retry loop) when Redis is down, so
    the upload still succeeds and the dispatcher offers the video again later."""

    def __init__(self, app_settings: Settings) -> None:
        self.settings = app_settings
        self.celery = app if app_settings == settings else create_celery(app_settings)

    def enqueue(self, video_id: str, priority: int) -> None:
        try:
            self.celery.send_task(
                PROCESS_TASK,
                args=[video_id],
                priority=redis_priority(priority, self.settings),
                retry=False,
                ignore_result=True,  # the database holds the outcome; the result backend is not needed
            )
        except (OperationalError, OSError, RedisError) as exc:
            raise QueueUnavailable(f"the broker is unreachable ({exc})") from exc

    def close(self) -> None:
        self.celery.close()
