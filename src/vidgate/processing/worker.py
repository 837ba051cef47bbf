"""The Celery worker of the distributed mode (``vidgate worker``): the seed's task names.

Tasks are thin and idempotent: they take ids, re-read the database, and are acknowledged
only after they finish (``acks_late``), so a pool process killed mid-job leaves its job to be
delivered again (``task_reject_on_worker_lost``). :func:`create_worker` builds the app and
registers the tasks on it when called (never as a side effect of importing this module); each
pool process wires its own services on its first task (:mod:`vidgate.wiring`), after the fork.
"""

from __future__ import annotations

import json
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init

from vidgate.config import Settings
from vidgate.events.schema import from_wire, to_wire
from vidgate.library.retention import sweep_library
from vidgate.processing.celery_queue import PROCESS_TASK, SWEEP_TASK, create_celery
from vidgate.processing.dispatch import sweep
from vidgate.wiring import Services, build_services


class TransientProcessingError(Exception):
    """A job failed for a reason that may pass (retried with backoff)."""


class WorkerServices:
    """The services of one worker process, built on first use: a pool process builds its own
    after the fork, since connections must not be shared with the parent."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._services: Services | None = None

    def get(self) -> Services:
        if self._services is None:
            self._services = build_services(self.settings, start_queue=True)
        return self._services

    def reset(self, **_: Any) -> None:
        self._services = None


def create_worker(settings: Settings) -> Celery:
    """A Celery app for ``settings`` with every vidgate task registered on it."""
    celery = create_celery(settings)
    services = WorkerServices(settings)
    worker_process_init.connect(services.reset, weak=False)

    @celery.task(name=PROCESS_TASK, bind=True, acks_late=True, max_retries=None, ignore_result=True, shared=False)
    def process_video_async(self: Task, video_id: str) -> str:
        """Analyse one stored video and store its result (once), under a lease in this worker's name."""
        outcome = services.get().processing.run(video_id, self.request.retries, worker=self.request.hostname)
        if outcome.retry_in is not None:
            raise self.retry(countdown=outcome.retry_in, exc=TransientProcessingError(video_id))
        return str(outcome.status)

    @celery.task(name="process_video_batch", shared=False)
    def process_video_batch(video_ids: list[str]) -> int:
        """Queue many videos at once (each as its own job, with its own priority)."""
        processing = services.get().processing
        return sum(1 for video_id in video_ids if processing.requeue(video_id))

    @celery.task(name="cleanup_expired_sessions", shared=False)
    def cleanup_expired_sessions() -> dict[str, int]:
        """Expire old sessions and sweep orphans, then the library (RETENTION_DAYS; on the beat schedule)."""
        wired = services.get()
        return {**wired.cleanup.run().model_dump(), **sweep_library(wired).model_dump()}

    @celery.task(name=SWEEP_TASK, ignore_result=True, shared=False)
    def sweep_processing_jobs() -> dict[str, Any]:
        """The dispatcher round on the beat schedule: jobs whose lease ran out, hand-overs the broker
        lost, videos not handed over yet (see :mod:`vidgate.processing.dispatch`)."""
        return sweep(services.get().processing).model_dump()

    @celery.task(name="send_websocket_notification", shared=False)
    def send_websocket_notification(event: dict[str, Any]) -> dict[str, Any]:
        """Store an event (the envelope of :mod:`vidgate.events.schema`, with ``audience``) and publish
        it through the worker's event bus to every API process's sockets; returns the first
        receiver's copy, numbered in that user's stream."""
        parsed = from_wire(json.dumps(event))
        stored = services.get().events.to_audience(parsed)
        if stored is None:
            raise ValueError("the event names no audience")
        published: dict[str, Any] = json.loads(to_wire(stored))
        return published

    return celery
