"""Where processing jobs wait: ``TaskQueue`` with an in-process and a Celery implementation.

Both honour priority (higher runs first) and run at most PROCESSING_MAX_CONCURRENT_JOBS
jobs at once (the Celery one per worker process). Jobs carry only the video id: the worker
re-reads everything from the database, so a repeated job is harmless.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections.abc import Callable
from typing import Protocol

from vidgate.errors import QueueUnavailable

log = logging.getLogger(__name__)

__all__ = ["InlineQueue", "QueueUnavailable", "TaskQueue"]


class TaskQueue(Protocol):
    #: a job handed over starts in this process at once (the upload hands it over after its answer)
    starts_here: bool

    def enqueue(self, video_id: str, priority: int) -> None:
        """Hand one video to the workers; raise :class:`QueueUnavailable` if that cannot happen now."""
        ...

    def close(self) -> None: ...


class InlineQueue:
    """A priority queue served by ``workers`` threads inside this process (the embedded default).

    ``job(video_id, attempt)`` returns the delay before a retry, or None when the video is done
    (processed, or failed for good). Jobs held here die with the process; the dispatcher
    offers every still-queued video again at start-up, so none is lost.
    """

    starts_here = True

    def __init__(self, job: Callable[[str, int], float | None], workers: int) -> None:
        self._job = job
        self._heap: list[tuple[int, int, str, int]] = []
        self._order = itertools.count()
        self._ready = threading.Condition()
        self._closed = False
        self._queued: set[str] = set()
        self._threads = [
            threading.Thread(target=self._work, name=f"vidgate-job-{n}", daemon=True) for n in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def enqueue(self, video_id: str, priority: int, attempt: int = 0) -> None:
        with self._ready:
            if video_id in self._queued and attempt == 0:
                return  # already waiting: one job per video
            self._queued.add(video_id)
            heapq.heappush(self._heap, (-priority, next(self._order), video_id, attempt))
            self._ready.notify()

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._heap and not self._closed:
                    self._ready.wait()
                if self._closed:
                    return
                negative_priority, _, video_id, attempt = heapq.heappop(self._heap)
                self._queued.discard(video_id)
            try:
                delay = self._job(video_id, attempt)
            except Exception:
                log.exception("processing job for %s crashed", video_id)
                delay = None
            if delay is not None:
                timer = threading.Timer(delay, self.enqueue, (video_id, -negative_priority, attempt + 1))
                timer.daemon = True
                timer.start()

    def pending(self) -> int:
        with self._ready:
            return len(self._heap)

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        for thread in self._threads:
            thread.join(timeout=30)
