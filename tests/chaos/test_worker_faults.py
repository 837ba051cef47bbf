"""Faults of the distributed mode: a Celery worker killed in the middle of a job, and Redis
(the broker) stopped for 20 s while uploads go on."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from sqlalchemy import func, select

from tests.cluster import cluster, own_redis
from tests.conftest import free_port
from tests.media import make_scene_video, make_video
from vidgate.db.models import Video, VideoAnalysisResultRow, VideoStatus


def test_a_killed_worker_loses_no_job(backend: str, tmp_path: Path, broker: str) -> None:
    clip = make_scene_video(tmp_path / "long.mp4", seconds=40, width=854, height=480, seed=41)
    with cluster(backend, tmp_path, broker, decode_threads=1) as running:
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
