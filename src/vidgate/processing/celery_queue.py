"""Celery on Redis for the distributed mode: the client configuration and ``CeleryQueue``.

:func:`create_celery` builds a Celery app for these settings (the API's queue sends with it;
:mod:`vidgate.processing.worker` registers the tasks on one). A worker that dies whole is
noticed sooner than the Redis visibility timeout (twice the longest job): its job's lease runs
out and the dispatcher hands the video on (:mod:`vidgate.processing.lease`). Priority 1-10 maps
to Redis priority steps (Redis runs the lowest step first).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.worker.consumer import Consumer
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from vidgate.config import Settings
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
        worker_consumer=QuickReconnectConsumer,
        vidgate_broker_retry_seconds=settings.processing.broker_retry_seconds,
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
        interval = self.app.conf.vidgate_broker_retry_seconds
        ensure_connection = conn.ensure_connection

        def quickly(*args: Any, **kwargs: Any) -> Any:
            kwargs.update(interval_start=interval, interval_step=0, interval_max=interval)
            return ensure_connection(*args, **kwargs)

        conn.ensure_connection = quickly
        return super().ensure_connected(conn)


class CeleryQueue:
    """``TaskQueue`` over Celery: enqueueing fails fast (no retry loop) when Redis is down, so
    the upload still succeeds and the dispatcher offers the video again later."""

    starts_here = False  # a worker elsewhere takes it; the upload answers once it is in the broker

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.celery = create_celery(settings)

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
