"""The dispatcher round, on SQLite and PostgreSQL: jobs whose lease ran out and hand-overs the
broker lost are handed over again, each once per round, and a broker that refuses leaves
the video queued (the real Redis and workers: tests/chaos/test_worker_faults.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from tests.helpers import finishes_at_once, sqlite_write_lock_held
from tests.processing.test_queue import _stored_video
from vidgate import metrics
from vidgate.db.models import Video, VideoStatus, utcnow
from vidgate.processing import dispatch, lease
from vidgate.processing.queue import QueueUnavailable


class RecordingQueue:
    """A ``TaskQueue`` that keeps what it was handed (or refuses, like a broker that is down)."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.down = False

    def enqueue(self, video_id: str, priority: int) -> None:
        if self.down:
            raise QueueUnavailable("the broker is unreachable (test)")
        self.sent.append(video_id)

    def close(self) -> None:
        return None


def _counter(reason: str) -> float:
    return float(metrics.REDISPATCHED.labels(reason)._value.get())


def test_a_hand_over_the_broker_did_not_start_in_time_is_sent_again(
    services_for: Callable[..., Any], tmp_path: Path
) -> None:
    with services_for(processing={"dispatch_timeout_seconds": 60}) as services:
        queue = RecordingQueue()
        services.processing.queue = queue
        video_id = _stored_video(services, tmp_path)  # handed over as its upload completes
        assert queue.sent == [video_id]
        assert dispatch.sweep(services.processing) == dispatch.SweepReport()  # handed over, not yet due again
        assert queue.sent == [video_id]

        before = _counter("dispatch_timeout")
        with services.db.session() as session:  # the broker lost it a while ago (restarted empty)
            session.execute(
                update(Video).where(Video.id == video_id).values(dispatched_at=utcnow() - timedelta(seconds=61))
            )
        assert dispatch.sweep(services.processing) == dispatch.SweepReport(resent=1, dispatched=1)
        assert queue.sent == [video_id, video_id]
        assert _counter("dispatch_timeout") == before + 1
        with services.db.session() as session:
            video = session.get_one(Video, video_id)
            assert video.status is VideoStatus.QUEUED and video.dispatched_at is not None


def test_a_job_whose_lease_ran_out_is_queued_and_handed_over_again(
    services_for: Callable[..., Any], tmp_path: Path
) -> None:
    with services_for() as services:
        queue = RecordingQueue()
        services.processing.queue = queue
        video_id = _stored_video(services, tmp_path)
        dispatch.sweep(services.processing)
        with services.db.session() as session:
            assert lease.claim(session, video_id, "dead-worker@host", 60, 3600).lease is not None
        assert dispatch.sweep(services.processing) == dispatch.SweepReport()  # its worker is alive
        before = _counter("lease_lapsed")
        with services.db.session() as session:
            session.execute(
                update(Video).where(Video.id == video_id).values(lease_expires_at=utcnow() - timedelta(seconds=1))
            )
        assert dispatch.sweep(services.processing) == dispatch.SweepReport(lapsed_leases=1, dispatched=1)
        assert queue.sent == [video_id, video_id]
        assert _counter("lease_lapsed") == before + 1
        assert services.processing.run(video_id, worker="live-worker@host").status == "completed"
        with services.db.session() as session:
            video = session.get_one(Video, video_id)
            assert video.attempts == 2 and video.lease_holder == "live-worker@host"


def test_a_broker_that_refuses_leaves_the_video_queued_and_says_so(
    services_for: Callable[..., Any], tmp_path: Path
) -> None:
    with services_for() as services:
        queue = RecordingQueue()
        queue.down = True
        services.processing.queue = queue
        video_id = _stored_video(services, tmp_path)
        assert dispatch.sweep(services.processing) == dispatch.SweepReport(broker_reachable=False)
        with services.db.session() as session:
            assert session.get_one(Video, video_id).dispatched_at is None
        queue.down = False
        assert dispatch.sweep(services.processing) == dispatch.SweepReport(dispatched=1)
        assert queue.sent == [video_id]


def test_a_round_with_nothing_to_do_takes_no_write_lock(services_for: Callable[..., Any], tmp_path: Path) -> None:
    """At rest the dispatcher runs every few seconds: on SQLite it must not queue behind the
    single writer (nor hold uploads up) just to find nothing."""
    with services_for() as services:
        if services.db.engine.dialect.name != "sqlite":
            pytest.skip("SQLite's database-wide write lock")
        services.processing.queue = RecordingQueue()
        with sqlite_write_lock_held(services.db):
            assert finishes_at_once(lambda: dispatch.sweep(services.processing)) == dispatch.SweepReport()
