"""One contract suite run over every TaskQueue (in-process, Celery on Redis): what the
dispatcher relies on, whichever queue the settings pick. What only the in-process queue does
is in tests/processing/test_queue.py; the Celery worker end to end in tests/processing/test_celery.py."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker

from tests.conftest import make_settings
from vidgate.processing.celery_queue import PROCESS_TASK, CeleryQueue, create_celery
from vidgate.processing.queue import InlineQueue, TaskQueue


@dataclass
class Consumer:
    """A queue, and the jobs its one worker ran, in order."""

    queue: TaskQueue
    start: Callable[[], None]  # let the worker take jobs (until then they wait)
    ran: list[str] = field(default_factory=list)

    def wait_for(self, count: int, timeout: float = 20) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.ran) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.ran)


@pytest.fixture(params=["inline", "celery"])
def consumer(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Consumer]:
    if request.param == "inline":
        gate = threading.Event()
        ran: list[str] = []

        def job(video_id: str, attempt: int) -> float | None:
            gate.wait(20)  # the worker holds its first job until the test starts consuming
            ran.append(video_id)
            return None

        inline = InlineQueue(job, workers=1)
        yield Consumer(inline, gate.set, ran)
        gate.set()
        inline.close()
        return
    broker = request.getfixturevalue("broker")
    settings = make_settings(
        tmp_path,
        f"sqlite:///{tmp_path / 'unused.db'}",
        processing={"queue": "celery", "max_concurrent_jobs": 1},
        celery={"broker_url": broker, "result_backend": broker},
    )
    worker_app = create_celery(settings)
    consumer = Consumer(CeleryQueue(settings), lambda: None)

    @worker_app.task(name=PROCESS_TASK, shared=False)
    def record(video_id: str) -> None:
        consumer.ran.append(video_id)

    with contextlib.ExitStack() as stack:

        def start() -> None:
            stack.enter_context(
                start_worker(worker_app, pool="solo", concurrency=1, perform_ping_check=False, loglevel="WARNING")
            )

        consumer.start = start
        yield consumer
    consumer.queue.close()
    worker_app.close()


def test_every_enqueued_video_is_run_once(consumer: Consumer) -> None:
    for index in range(5):
        consumer.queue.enqueue(f"video-{index}", 5)
    consumer.start()
    assert sorted(consumer.wait_for(5)) == [f"video-{index}" for index in range(5)]
    time.sleep(0.3)
    assert len(consumer.ran) == 5


def test_waiting_jobs_run_highest_priority_first(consumer: Consumer) -> None:
    consumer.queue.enqueue("first", 10)  # taken at once where a worker is idle
    time.sleep(0.2)
    for index in range(3):
        consumer.queue.enqueue(f"low-{index}", 1)
    consumer.queue.enqueue("urgent", 9)
    consumer.start()
    ran = consumer.wait_for(5)
    assert ran[:2] == ["first", "urgent"]
    assert sorted(ran[2:]) == ["low-0", "low-1", "low-2"]


def test_close_ends_the_queue(consumer: Consumer) -> None:
    consumer.start()
    consumer.queue.enqueue("only", 5)
    assert consumer.wait_for(1) == ["only"]
    consumer.queue.close()
