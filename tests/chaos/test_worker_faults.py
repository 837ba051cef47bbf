"""Faults of the distributed mode: a Celery worker killed in the middle of a job (its pool
process, or the whole worker), a worker frozen until its job was handed on (the late
original), Redis stopped for 20 s while uploads go on, and Redis losing the jobs it held."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from tests.cluster import Cluster, cluster, own_redis
from tests.conftest import free_port
from tests.media import make_scene_video, make_video
from vidgate.db.models import Video, VideoAnalysisResultRow, VideoStatus

# A short lease, so that a dead worker's job is handed on within seconds (renewed 8 times per lease).
SHORT_LEASE = {"lease_seconds": 4, "lease_renew_seconds": 0.5}


def test_a_killed_worker_loses_no_job(backend: str, tmp_path: Path, broker: str) -> None:
    clip = make_scene_video(tmp_path / "long.mp4", seconds=40, width=854, height=480, seed=41)
    # a lease far longer than the wait below: Celery's redelivery is taken over at once, as the
    # killed pool process was this same worker's
    with cluster(backend, tmp_path, broker, decode_threads=1, lease_seconds=3600) as running:
        worker = running.start_worker("--concurrency", "1")
        video_id = running.upload(clip)
        deadline = time.monotonic() + 60
        while True:  # wait until the job runs, then kill the process running it
            with running.server.db.session() as session:
                status = session.get(Video, video_id).status
            if status is VideoStatus.PROCESSING:
                break
            assert status is not VideoStatus.COMPLETED, "the job ended before it could be interrupted"
            assert time.monotonic() < deadline, running.worker_logs()
            time.sleep(0.01)
        children = subprocess.run(["pgrep", "-P", str(worker.pid)], capture_output=True, text=True).stdout.split()
        assert children, "the worker has no pool process"
        for child in children:
            os.kill(int(child), signal.SIGKILL)
        video = running.wait(video_id, timeout=120)
        assert video["status"] == "completed", running.worker_logs()
        assert video["attempts"] == 2  # delivered again after the kill
        assert "which ran attempt 1, is gone; taking over" in running.worker_logs()
        with running.server.db.session() as session:
            content_id = session.get_one(Video, video_id).content_id
            stored = session.scalar(select(func.count()).where(VideoAnalysisResultRow.content_id == content_id))
        assert stored == 1


def test_uploads_go_on_while_redis_is_down(backend: str, tmp_path: Path) -> None:
    port = free_port()
    broker = f"redis://127.0.0.1:{port}/0"
    (tmp_path / "redis").mkdir()
    with own_redis(port, tmp_path / "redis") as redis_server, cluster(backend, tmp_path, broker) as running:
        running.start_worker()
        first = running.upload(make_video(tmp_path / "before.mp4", seed=51))
        assert running.wait(first)["status"] == "completed", running.worker_logs()
        clips = [make_video(tmp_path / f"during{i}.mp4", seed=60 + i) for i in range(30)]  # the loop only uploads
        redis_server.terminate()
        redis_server.wait(timeout=10)
        during: list[str] = []
        took: list[float] = []
        outage_ends = time.monotonic() + 20  # 20 s without Redis, uploads going on all the while
        while time.monotonic() < outage_ends and len(during) < len(clips):
            started = time.monotonic()
            during.append(running.upload(clips[len(during)]))
            took.append(time.monotonic() - started)
            time.sleep(0.5)
        time.sleep(max(0.0, outage_ends - time.monotonic()))  # the outage lasts 20 s in any case
        with running.server.db.session() as session:
            waiting = session.scalars(select(Video).where(Video.id.in_(during))).all()
        assert len(waiting) == len(during) >= 8, took  # each answered in well under the outage
        assert all(v.status is VideoStatus.QUEUED for v in waiting)  # accepted, waiting for the broker
        with own_redis(port, tmp_path / "redis"):
            for video_id in during:
                assert running.wait(video_id, timeout=120)["status"] == "completed", running.worker_logs()


def _running_on(running: Cluster, video_id: str) -> str:
    """Wait until a worker runs the video's job; the name of that worker."""
    deadline = time.monotonic() + 60
    while True:
        with running.server.db.session() as session:
            video = session.get_one(Video, video_id)
            status, holder = video.status, video.lease_holder
        if status is VideoStatus.PROCESSING and holder:
            return holder
        assert status is not VideoStatus.COMPLETED, "the job ended before it could be interrupted"
        assert time.monotonic() < deadline, running.worker_logs()
        time.sleep(0.01)


def _two_workers(running: Cluster) -> dict[str, subprocess.Popen[str]]:
    host = socket.gethostname()
    return {f"{name}@{host}": running.start_worker("--concurrency", "1", "--hostname", name) for name in ("wa", "wb")}


def _results(running: Cluster, video_id: str) -> list[tuple[object, ...]]:
    with running.server.db.session() as session:
        rows = session.execute(
            select(
                VideoAnalysisResultRow.id, VideoAnalysisResultRow.created_at, VideoAnalysisResultRow.processing_seconds
            )
            .join(Video, Video.content_id == VideoAnalysisResultRow.content_id)
            .where(Video.id == video_id)
        ).all()
    return [tuple(row) for row in rows]


@pytest.mark.slow
def test_a_worker_killed_whole_hands_its_job_to_another(backend: str, tmp_path: Path, broker: str) -> None:
    """SIGKILL of the worker's whole process group (host loss, OOM kill): its job stays
    unacknowledged in Redis for hours (2 x PROCESSING_JOB_TIMEOUT_SECONDS), but its lease runs out
    in seconds and the dispatcher hands the video to the other worker."""
    clip = make_scene_video(tmp_path / "long.mp4", seconds=40, width=854, height=480, seed=41)
    with cluster(backend, tmp_path, broker, decode_threads=1, **SHORT_LEASE) as running:
        workers = _two_workers(running)
        video_id = running.upload(clip)
        holder = _running_on(running, video_id)
        os.killpg(workers[holder].pid, signal.SIGKILL)
        workers[holder].wait(timeout=20)
        video = running.wait(video_id, timeout=120)
        assert video["status"] == "completed", running.worker_logs()
        assert video["attempts"] == 2
        assert len(_results(running, video_id)) == 1
        with running.server.db.session() as session:
            (survivor,) = set(workers) - {holder}
            assert session.get_one(Video, video_id).lease_holder == survivor
        assert f"processing {video_id} started (attempt 2)" in running.worker_logs()


@pytest.mark.slow
def test_a_late_original_stores_nothing(backend: str, tmp_path: Path, broker: str) -> None:
    """A worker frozen mid-job (SIGSTOP of its group: a VM paused, a stalled disk) until its job
    completed on the other worker, then woken: it finds its lease gone and stores nothing."""
    clip = make_scene_video(tmp_path / "long.mp4", seconds=40, width=854, height=480, seed=43)
    with cluster(backend, tmp_path, broker, decode_threads=1, **SHORT_LEASE) as running:
        workers = _two_workers(running)
        video_id = running.upload(clip)
        holder = _running_on(running, video_id)
        frozen = workers[holder]
        os.killpg(frozen.pid, signal.SIGSTOP)
        try:
            video = running.wait(video_id, timeout=120)
            assert video["status"] == "completed" and video["attempts"] == 2, running.worker_logs()
            stored = _results(running, video_id)
            assert len(stored) == 1
        finally:
            os.killpg(frozen.pid, signal.SIGCONT)
        log = tmp_path / f"worker-{list(workers).index(holder)}.log"
        deadline = time.monotonic() + 60
        while "lost its lease" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        assert f"processing {video_id}: attempt 1 lost its lease" in log.read_text()
        assert _results(running, video_id) == stored
        after = running.wait(video_id)
        assert after["status"] == "completed" and after["attempts"] == 2
        assert after["finished_at"] == video["finished_at"]


@pytest.mark.slow
def test_a_job_redis_lost_is_handed_over_again(backend: str, tmp_path: Path) -> None:
    """Redis without persistence loses what it held: flushed (one video), restarted empty
    (another). Both videos were handed over before; both still complete, each analysed once."""
    port = free_port()
    broker = f"redis://127.0.0.1:{port}/0"
    (tmp_path / "redis").mkdir()
    client = redis.Redis(host="127.0.0.1", port=port)
    with (
        own_redis(port, tmp_path / "redis") as first_redis,
        cluster(backend, tmp_path, broker, dispatch_timeout_seconds=2) as running,
    ):
        resent_before = _resent(running)
        flushed = running.upload(make_video(tmp_path / "flushed.mp4", seed=71))  # no worker yet: it waits in Redis
        assert client.dbsize() > 0
        client.flushall()
        restarted = running.upload(make_video(tmp_path / "restarted.mp4", seed=72))
        with running.server.db.session() as session:
            handed = session.scalars(select(Video.dispatched_at).where(Video.id.in_([flushed, restarted]))).all()
        assert len(handed) == 2 and all(handed)  # both count as handed over
        first_redis.terminate()
        first_redis.wait(timeout=10)
        with own_redis(port, tmp_path / "redis"):  # a new, empty Redis on the same port
            running.start_worker()
            for video_id in (flushed, restarted):
                video = running.wait(video_id, timeout=120)
                assert video["status"] == "completed", running.worker_logs()
                assert video["attempts"] == 1  # the copies handed over again were run once
                assert len(_results(running, video_id)) == 1
            assert _resent(running) >= resent_before + 2


def _resent(running: Cluster) -> float:
    """Hand-overs the API's dispatcher repeated because the broker did not start them in time."""
    scraped = httpx.get(f"{running.server.base_url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
        if sample.name == "vidgate_processing_redispatched_total" and sample.labels.get("reason") == "dispatch_timeout"
    )
