"""The in-process queue: priority, concurrency, retries with backoff, restart recovery."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from tests.helpers import split
from tests.media import make_video
from tests.uploads.test_chunked import send
from vidgate.db.models import Content, Video, VideoStatus
from vidgate.processing.queue import InlineQueue


def test_higher_priority_runs_first_and_concurrency_is_bounded() -> None:
    gate = threading.Event()
    order: list[str] = []
    active = [0]
    peak = [0]
    lock = threading.Lock()

    def job(video_id: str, attempt: int) -> float | None:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            order.append(video_id)
        gate.wait(5)
        time.sleep(0.01)
        with lock:
            active[0] -= 1
        return None

    queue = InlineQueue(job, workers=2)
    queue.enqueue("busy-1", 5)
    queue.enqueue("busy-2", 5)
    time.sleep(0.1)  # both workers are now blocked on the gate
    for index in range(20):
        queue.enqueue(f"low-{index}", 1)
    queue.enqueue("urgent", 9)
    queue.enqueue("urgent", 9)  # a video already waiting is not queued twice
    gate.set()
    deadline = time.monotonic() + 10
    while len(order) < 23 and time.monotonic() < deadline:
        time.sleep(0.01)
    queue.close()
    assert order[:2] == ["busy-1", "busy-2"]
    assert order[2] == "urgent"
    assert order[3:] == [f"low-{index}" for index in range(20)]  # first come, first served within a priority
    assert peak[0] == 2


def _stored_video(services: Any, tmp_path: Path) -> str:
    data = make_video(tmp_path / "clip.mp4", frames=25).read_bytes()
    chunks = split(data, 1 << 20)
    send(services.uploads, chunks[0], session_id="q", chunk_index=0, total_chunks=1)
    with services.db.session() as session:
        return str(session.scalars(select(Video.id)).one())


def test_transient_failures_retry_with_backoff_then_fail(services_for: Callable[..., Any], tmp_path: Path) -> None:
    with services_for(processing={"max_retries": 2, "retry_backoff_seconds": 0.05}) as services:
        video_id = _stored_video(services, tmp_path)
        with services.db.session() as session:
            key = session.get_one(Content, session.get_one(Video, video_id).content_id).storage_key
        services.processing.blobs.path(key).rename(tmp_path / "away")  # the storage "disappears"
        attempts: list[float] = []

        def job(vid: str, attempt: int) -> float | None:
            attempts.append(time.monotonic())
            return services.processing.run(vid, attempt).retry_in

        queue = InlineQueue(job, workers=1)
        services.processing.queue = queue
        assert services.processing.dispatch_pending() == 1
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with services.db.session() as session:
                video = session.get(Video, video_id)
                if video.status is VideoStatus.FAILED:
                    break
            time.sleep(0.05)
        queue.close()
        assert video.status is VideoStatus.FAILED
        assert "gave up after 3 attempts" in (video.error_message or "")
        assert video.attempts == 3
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        assert gaps[0] >= 0.05 and gaps[1] >= 0.1  # the delay doubles


def test_jobs_of_a_dead_process_are_offered_again(services_for: Callable[..., Any], tmp_path: Path) -> None:
    with services_for() as services:
        video_id = _stored_video(services, tmp_path)
        with services.db.session() as session:
            video = session.get(Video, video_id)
            video.status, video.dispatched_at = VideoStatus.PROCESSING, video.queued_at  # died mid-job
        assert services.processing.requeue_abandoned() == 1
        queue = InlineQueue(lambda vid, attempt: services.processing.run(vid, attempt).retry_in, workers=1)
        services.processing.queue = queue
        services.processing.dispatch_pending()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with services.db.session() as session:
                if session.get(Video, video_id).status is VideoStatus.COMPLETED:
                    break
            time.sleep(0.05)
        queue.close()
        assert services.processing.owner_result(video_id) is not None
