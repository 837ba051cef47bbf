"""Leases on processing jobs, on SQLite and PostgreSQL: a claim starts the next attempt, a
duplicate delivery finds the video taken, a lapsed lease is queued again, and a superseded
attempt (a late original) can write nothing: no progress, no result, no failure."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from tests.processing.test_queue import _stored_video
from vidgate.db.models import Content, Video, VideoAnalysisResultRow, VideoStatus, utcnow
from vidgate.processing import lease
from vidgate.processing.models import VideoAnalysisResult
from vidgate.processing.pipeline import analyze

LONG = 60.0  # a lease that does not run out during a test
JOB_TIMEOUT = 3600.0


def _queued_video(services: Any, tmp_path: Path) -> str:
    video_id = _stored_video(services, tmp_path)
    with services.db.session() as session:
        assert session.get(Video, video_id).status is VideoStatus.QUEUED
    return video_id


def _claim(services: Any, video_id: str, holder: str, seconds: float = LONG) -> lease.Claim:
    with services.db.session() as session:
        return lease.claim(session, video_id, holder, seconds, JOB_TIMEOUT)


def _expire(services: Any, video_id: str) -> None:
    """The holder stopped renewing: its lease ends in the past."""
    with services.db.session() as session:
        session.execute(
            update(Video).where(Video.id == video_id).values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


def _content(services: Any, video_id: str) -> Content:
    """The content (stored bytes) of a video."""
    with services.db.session() as session:
        content = session.get_one(Content, session.get_one(Video, video_id).content_id)
        session.expunge(content)
        return content


def _analysed(services: Any, content: Content) -> VideoAnalysisResult:
    """The analysis a worker would make of ``content`` (what a late attempt then tries to store)."""
    processing = services.processing
    return analyze(
        processing.blobs.path(content.storage_key),
        video_id=content.id,
        content_hash=content.content_hash,
        model_type="resnet50",
        config=processing.config,
    )


def _video(services: Any, video_id: str) -> Video:
    with services.db.session() as session:
        video = session.get_one(Video, video_id)
        session.expunge(video)
        return video


def test_a_claim_starts_the_next_attempt_and_a_duplicate_finds_the_video_taken(
    services_for: Callable[..., Any], tmp_path: Path
) -> None:
    with services_for() as services:
        video_id = _queued_video(services, tmp_path)
        first = _claim(services, video_id, "worker-a@host")
        assert first.lease == lease.Lease(video_id, 1, "worker-a@host")
        video = _video(services, video_id)
        assert video.status is VideoStatus.PROCESSING and video.attempts == 1
        assert video.lease_holder == "worker-a@host" and video.lease_expires_at is not None
        assert video.lease_expires_at > utcnow() + timedelta(seconds=LONG - 30)

        duplicate = _claim(services, video_id, "worker-b@host")
        assert duplicate == lease.Claim(None, status=VideoStatus.PROCESSING, holder="worker-a@host")
        assert _video(services, video_id).attempts == 1  # a duplicate delivery is not an attempt
        assert _claim(services, "no-such-video", "worker-b@host") == lease.Claim(None)


def test_renewal_moves_the_lease_and_fails_once_the_attempt_is_superseded(
    services_for: Callable[..., Any], tmp_path: Path
) -> None:
    with services_for() as services:
        video_id = _queued_video(services, tmp_path)
        first = _claim(services, video_id, "worker-a@host", seconds=5).lease
        assert first is not None
        before = _video(services, video_id).lease_expires_at
        assert before is not None
        lease.renew(services.db, first, LONG)
        after = _video(services, video_id).lease_expires_at
        assert after is not None and after > before

        _expire(services, video_id)
        assert [r.video_id for r in lease.reclaim_lapsed(services.db, JOB_TIMEOUT)] == [video_id]
        second = _claim(services, video_id, "worker-b@host").lease
        assert second is not None and second.attempt == 2
        with pytest.raises(lease.LeaseLost):
            lease.renew(services.db, first, LONG)
        with pytest.raises(lease.LeaseLost):
            lease.write_progress(services.db, first, "sampling", 50.0)
        lease.write_progress(services.db, second, "sampling", 20.0)
        assert _video(services, video_id).progress == 20.0


def test_the_sweep_queues_again_only_jobs_whose_lease_ran_out(services_for: Callable[..., Any], tmp_path: Path) -> None:
    with services_for() as services:
        video_id = _queued_video(services, tmp_path)
        assert _claim(services, video_id, "worker-a@host").lease is not None
        assert lease.reclaim_lapsed(services.db, JOB_TIMEOUT) == []  # renewed in time: left alone
        assert _video(services, video_id).status is VideoStatus.PROCESSING

        _expire(services, video_id)
        reclaimed = lease.reclaim_lapsed(services.db, JOB_TIMEOUT)
        assert reclaimed == [lease.Reclaimed(video_id, 1, "worker-a@host")]
        video = _video(services, video_id)
        assert video.status is VideoStatus.QUEUED and video.dispatched_at is None and video.lease_expires_at is None
        assert lease.reclaim_lapsed(services.db, JOB_TIMEOUT) == []  # once


def test_a_job_from_before_leases_is_reclaimed_after_the_longest_job_time(
    services_for: Callable[..., Any], tmp_path: Path
) -> None:
    with services_for() as services:
        video_id = _queued_video(services, tmp_path)
        with services.db.session() as session:  # as an older worker left it: processing, no lease
            session.execute(
                update(Video)
                .where(Video.id == video_id)
                .values(status=VideoStatus.PROCESSING, started_at=utcnow() - timedelta(seconds=30))
            )
        assert lease.reclaim_lapsed(services.db, JOB_TIMEOUT) == []
        assert [r.video_id for r in lease.reclaim_lapsed(services.db, job_timeout_seconds=10)] == [video_id]


def test_a_late_original_cannot_store_a_second_result(services_for: Callable[..., Any], tmp_path: Path) -> None:
    """The conditional write itself: attempt 1 is superseded while it analyses; attempt 2 stores
    its result; attempt 1's result, failure and retry are all refused and change nothing."""
    with services_for() as services:
        processing = services.processing
        video_id = _queued_video(services, tmp_path)
        original = _claim(services, video_id, "worker-a@host").lease
        assert original is not None
        content = _content(services, video_id)
        late = _analysed(services, content)
        _expire(services, video_id)  # worker-a froze; its lease ran out
        lease.reclaim_lapsed(services.db, JOB_TIMEOUT)
        assert processing.run(video_id, worker="worker-b@host").status == "completed"
        with services.db.session() as session:
            stored = session.execute(select(VideoAnalysisResultRow.id, VideoAnalysisResultRow.result)).one()

        late.processing_seconds = 123.0  # recognisable if it were stored
        with pytest.raises(lease.LeaseLost):
            processing._store(late, content.id, "resnet50", original)
        with pytest.raises(lease.LeaseLost):
            processing.mark_failed(content.id, "the late original failed", original)
        with services.db.session() as session:
            rows = session.execute(select(VideoAnalysisResultRow.id, VideoAnalysisResultRow.result)).all()
        assert rows == [stored]
        video = _video(services, video_id)
        assert video.status is VideoStatus.COMPLETED and video.attempts == 2
        assert video.lease_holder == "worker-b@host" and video.error_message is None


def test_the_current_attempt_stores_even_after_its_lease_ran_out_if_nobody_took_over(
    services_for: Callable[..., Any], tmp_path: Path
) -> None:
    """A lapsed lease alone does not discard work: only a newer attempt does."""
    with services_for() as services:
        processing = services.processing
        video_id = _queued_video(services, tmp_path)
        current = _claim(services, video_id, "worker-a@host").lease
        assert current is not None
        content = _content(services, video_id)
        result = _analysed(services, content)
        _expire(services, video_id)
        processing._store(result, content.id, "resnet50", current)
        assert lease.reclaim_lapsed(services.db, JOB_TIMEOUT) == []
        video = _video(services, video_id)
        assert video.status is VideoStatus.COMPLETED and video.lease_expires_at is None


def test_the_keeper_renews_while_the_job_runs_and_notices_when_it_is_superseded(
    services_for: Callable[..., Any], tmp_path: Path
) -> None:
    with services_for() as services:
        video_id = _queued_video(services, tmp_path)
        current = _claim(services, video_id, "worker-a@host", seconds=1).lease
        assert current is not None
        first_end = _video(services, video_id).lease_expires_at
        assert first_end is not None
        with lease.LeaseKeeper(services.db, current, lease_seconds=LONG, renew_seconds=0.05) as keeper:
            deadline = time.monotonic() + 20
            while (_video(services, video_id).lease_expires_at or first_end) <= first_end:
                assert time.monotonic() < deadline, "the lease was never renewed"
                time.sleep(0.05)
            keeper.check()  # still current
            # The keeper renews every 0.05 s and may renew between our expiry and the sweep: repeat
            # until another worker holds the job (bounded), as a real lapse would end.
            while True:
                _expire(services, video_id)
                lease.reclaim_lapsed(services.db, JOB_TIMEOUT)
                if _claim(services, video_id, "worker-b@host").lease is not None:
                    break
                assert time.monotonic() < deadline, "the lapsed job was never handed on"
            assert keeper.lost.wait(20)
            with pytest.raises(lease.LeaseLost):
                keeper.check()


def test_duplicate_deliveries_of_a_finished_or_running_video_do_nothing(
    services_for: Callable[..., Any], tmp_path: Path
) -> None:
    with services_for() as services:
        processing = services.processing
        video_id = _queued_video(services, tmp_path)
        assert processing.run(video_id, worker="worker-a@host").status == "completed"
        assert processing.run(video_id, worker="worker-b@host").status == "skipped"
        video = _video(services, video_id)
        assert video.attempts == 1 and video.lease_holder == "worker-a@host"
        with services.db.session() as session:
            assert session.scalar(select(func.count()).select_from(VideoAnalysisResultRow)) == 1
        processing.requeue(video_id)  # asked to process again: a new attempt, the result replaced
        assert _claim(services, video_id, "worker-c@host").lease == lease.Lease(video_id, 2, "worker-c@host")
        assert processing.run(video_id, worker="worker-d@host").status == "skipped"  # worker-c runs it


def test_a_transient_failure_hands_the_video_back_due_after_the_backoff(
    services_for: Callable[..., Any], tmp_path: Path
) -> None:
    with services_for(processing={"retry_backoff_seconds": 30}) as services:
        processing = services.processing
        video_id = _queued_video(services, tmp_path)
        processing.blobs.path(_content(services, video_id).storage_key).rename(tmp_path / "away")
        outcome = processing.run(video_id, worker="worker-a@host")
        assert outcome.status == "retry" and outcome.retry_in == 30
        video = _video(services, video_id)
        assert video.status is VideoStatus.QUEUED and video.lease_expires_at is None
        assert video.dispatched_at is not None and video.dispatched_at > utcnow() + timedelta(seconds=20)
        assert "is missing" in (video.error_message or "")


def test_a_job_of_a_gone_process_of_the_same_worker_is_taken_over_at_once(
    services_for: Callable[..., Any], tmp_path: Path
) -> None:
    """Celery delivers a killed pool process's job again at once, to the same worker: that
    worker need not wait for the lease to run out."""
    with services_for() as services:
        video_id = _queued_video(services, tmp_path)
        assert _claim(services, video_id, "worker-a@host").lease is not None
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        for pid, taken_over in ((1, False), (gone.pid, True)):  # pid 1 runs; the other is gone
            with services.db.session() as session:
                session.execute(update(Video).where(Video.id == video_id).values(lease_pid=pid))
            assert _claim(services, video_id, "worker-b@host").lease is None  # another worker waits
            claimed = _claim(services, video_id, "worker-a@host")
            assert (claimed.lease is not None) is taken_over
        assert claimed.lease == lease.Lease(video_id, 2, "worker-a@host")
        assert _video(services, video_id).lease_pid == os.getpid()
