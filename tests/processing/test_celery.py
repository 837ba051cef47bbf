"""The distributed mode against the real Redis on 127.0.0.1:6379 and real `vidgate worker`
processes: end to end, priorities, a killed worker, the seed's other tasks, a Redis outage."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, update

from tests.conftest import RunningServer, database_url_for, free_port, make_settings, running_server
from tests.helpers import post_chunk, wait_for_video
from tests.media import make_scene_video, make_video
from vidgate.config import all_env_names
from vidgate.db.models import UploadSession, Video, VideoAnalysisResultRow, VideoStatus, utcnow
from vidgate.events.bus import EVENTS_CHANNEL
from vidgate.events.schema import FailureData, ProcessingFailed, to_wire
from vidgate.processing.celery_app import create_celery


@contextlib.contextmanager
def redis_database() -> Iterator[str]:
    """A Redis database of the shared server for this test alone, emptied before and after."""
    client = redis.Redis(host="127.0.0.1", port=6379)
    for number in range(1, 16):
        if client.set(f"vidgate-test-lock:{number}", "1", nx=True, ex=600):
            break
    else:
        pytest.fail("no free Redis database for the test")
    url = f"redis://127.0.0.1:6379/{number}"
    redis.Redis.from_url(url).flushdb()
    try:
        yield url
    finally:
        redis.Redis.from_url(url).flushdb()
        client.delete(f"vidgate-test-lock:{number}")
        client.close()


@contextlib.contextmanager
def own_redis(port: int, directory: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(redis.ConnectionError):
            if client.ping():
                break
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=10)


class Cluster:
    """An API server (in this process) and `vidgate worker` processes sharing one database,
    storage directory and Redis."""

    def __init__(self, server: RunningServer, env: dict[str, str]) -> None:
        self.server = server
        self.env = env
        self.workers: list[subprocess.Popen[str]] = []

    def start_worker(self, *args: str) -> subprocess.Popen[str]:
        log = (self.server.settings.server.data_dir / f"worker-{len(self.workers)}.log").open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", "vidgate", "worker", *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.workers.append(process)
        return process

    def stop_workers(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=20)
        self.workers.clear()

    def upload(self, path: Path, user: str = "alice", **fields: object) -> str:
        with self.server.client(user) as client:
            response = post_chunk(client, path.read_bytes(), filename=path.name, content_type="", **fields)
        assert response.status_code == 200, response.text
        return str(response.json()["data"]["video_id"])

    def wait(self, video_id: str, timeout: float = 90) -> dict[str, object]:
        with self.server.client() as client:
            return wait_for_video(client, video_id, timeout)

    def worker_logs(self) -> str:
        return "\n".join(p.read_text()[-3000:] for p in self.server.settings.server.data_dir.glob("worker-*.log"))


@contextlib.contextmanager
def cluster(backend: str, directory: Path, broker: str, **processing: object) -> Iterator[Cluster]:
    processing = {"queue": "celery", "dispatch_interval_seconds": 0.3, **processing}
    with database_url_for(backend, directory) as url:
        settings = make_settings(
            directory, url, processing=processing, celery={"broker_url": broker, "result_backend": broker}
        )
        env = {k: v for k, v in os.environ.items() if k.upper() not in all_env_names()}
        env.update(
            VIDGATE_DATA_DIR=str(directory),
            DATABASE_URL=url,
            CELERY_BROKER_URL=broker,
            CELERY_RESULT_BACKEND=broker,
            AUTH_CREATE_DEV_KEY="false",
            VIDGATE_LOG_LEVEL="info",
            **{f"PROCESSING_{key.upper()}": str(value) for key, value in processing.items()},
        )
        with running_server(settings) as server:
            running = Cluster(server, env)
            try:
                yield running
            finally:
                running.stop_workers()


@pytest.fixture
def broker() -> Iterator[str]:
    with redis_database() as url:
        yield url


def test_upload_is_processed_by_a_worker(backend: str, tmp_path: Path, broker: str) -> None:
    metrics_port = free_port()
    with cluster(backend, tmp_path, broker) as running:
        running.start_worker("--metrics-port", str(metrics_port))
        video_id = running.upload(make_video(tmp_path / "a.mp4", seed=31))
        video = running.wait(video_id)
        assert video["status"] == "completed", running.worker_logs()
        with running.server.client() as client:
            assert len(client.get(f"/v1/videos/{video_id}/result").json()["data"]["samples"]) == 2
        # the job ran in a pool process; the worker's endpoint adds up every pool process's counters
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
    }
    assert samples.get(("vidgate_processing_jobs_total", (("outcome", "completed"),)), 0) >= 1, scraped
    assert samples[("vidgate_processing_stage_seconds_count", (("stage", "total"),))] >= 1


def test_priority_9_runs_before_twenty_priority_1_jobs(backend: str, tmp_path: Path, broker: str) -> None:
    with cluster(backend, tmp_path, broker) as running:
        low = [
            running.upload(make_video(tmp_path / f"low{i}.mp4", frames=5, seed=100 + i), priority=1) for i in range(20)
        ]
        urgent = running.upload(make_video(tmp_path / "urgent.mp4", frames=5, seed=200), priority=9)
        running.start_worker("--concurrency", "1")
        for video_id in [urgent, *low]:
            assert running.wait(video_id)["status"] == "completed", running.worker_logs()
        with running.server.db.session() as session:
            started = dict(session.execute(select(Video.id, Video.started_at)).all())
        assert started[urgent] < min(started[video_id] for video_id in low)


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
            stored = session.scalar(select(func.count()).where(VideoAnalysisResultRow.video_id == video_id))
        assert stored == 1


def test_the_seed_tasks(backend: str, tmp_path: Path, broker: str) -> None:
    with cluster(backend, tmp_path, broker) as running:
        running.env["UPLOAD_CLEANUP_INTERVAL_SECONDS"] = "1"
        running.start_worker("--beat")
        ids = [running.upload(make_video(tmp_path / f"b{i}.mp4", frames=10, seed=300 + i)) for i in range(2)]
        for video_id in ids:
            running.wait(video_id)
        celery = create_celery(running.server.settings)
        # process_video_batch queues every video again; each is analysed once more.
        assert celery.send_task("process_video_batch", args=[ids]).get(timeout=30) == 2
        deadline = time.monotonic() + 60
        while True:  # a short transaction per look: SQLite's writer lock must stay free for the worker
            with running.server.db.session() as session:
                attempts = session.scalar(select(func.min(Video.attempts)).where(Video.id.in_(ids)))
            if attempts >= 2:
                break
            assert time.monotonic() < deadline, running.worker_logs()
            time.sleep(0.1)
        # send_websocket_notification reaches a Redis subscriber (the API's event hub, later).
        subscriber = redis.Redis.from_url(broker).pubsub()
        subscriber.subscribe(EVENTS_CHANNEL)
        subscriber.get_message(timeout=1)
        event = json.loads(
            to_wire(ProcessingFailed(video_id=ids[0], audience=["u1"], data=FailureData(error_code="x", message="y")))
        )
        published = celery.send_task("send_websocket_notification", args=[event]).get(timeout=30)
        assert published["event_id"] == event["event_id"] and published["sequence"] >= 1
        seen: list[str] = []  # other events (the batch's processing) share the channel
        deadline = time.monotonic() + 10
        while event["event_id"] not in seen:
            assert time.monotonic() < deadline, seen
            message = subscriber.get_message(timeout=1)
            if message is not None:
                seen.append(json.loads(message["data"])["event_id"])
        # cleanup_expired_sessions runs on the beat schedule: an expired session gets swept.
        with running.server.client() as client:
            post_chunk(client, b"\x00" * 10, session_id="stale", chunk_index=1, total_chunks=3)
        with running.server.db.session() as session:
            session.execute(
                update(UploadSession)
                .where(UploadSession.session_id == "stale")
                .values(expires_at=utcnow() - timedelta(minutes=1))
            )
        deadline = time.monotonic() + 30
        while True:
            with running.server.db.session() as session:
                status = session.scalar(select(UploadSession.status).where(UploadSession.session_id == "stale"))
            if status == "expired":
                break
            assert time.monotonic() < deadline, running.worker_logs()
            time.sleep(0.2)
        report = celery.send_task("cleanup_expired_sessions").get(timeout=30)
        assert set(report) >= {"expired_sessions", "orphan_uploads_removed"}
        celery.close()


def test_uploads_go_on_while_redis_is_down(backend: str, tmp_path: Path) -> None:
    port = free_port()
    broker = f"redis://127.0.0.1:{port}/0"
    (tmp_path / "redis").mkdir()
    with own_redis(port, tmp_path / "redis") as redis_server, cluster(backend, tmp_path, broker) as running:
        running.start_worker()
        first = running.upload(make_video(tmp_path / "before.mp4", seed=51))
        assert running.wait(first)["status"] == "completed", running.worker_logs()
        redis_server.terminate()
        redis_server.wait(timeout=10)
        during = []
        outage_ends = time.monotonic() + 20  # 20 s without Redis, uploads going on all the while
        while time.monotonic() < outage_ends:
            during.append(running.upload(make_video(tmp_path / f"during{len(during)}.mp4", seed=60 + len(during))))
            time.sleep(1)
        with running.server.db.session() as session:
            waiting = session.scalars(select(Video).where(Video.id.in_(during))).all()
        assert len(waiting) == len(during) >= 10
        assert all(v.status is VideoStatus.QUEUED for v in waiting)  # accepted, waiting for the broker
        with own_redis(port, tmp_path / "redis"):
            for video_id in during:
                assert running.wait(video_id, timeout=120)["status"] == "completed", running.worker_logs()


def test_worker_concurrency_and_retries_come_from_settings(backend: str, tmp_path: Path, broker: str) -> None:
    with cluster(backend, tmp_path, broker, max_concurrent_jobs=2, max_retries=1, retry_backoff_seconds=0.2) as running:
        ids = [
            running.upload(make_scene_video(tmp_path / f"c{i}.mp4", seconds=10, width=640, height=360, seed=400 + i))
            for i in range(6)
        ]
        doomed = running.upload(make_video(tmp_path / "doomed.mp4", seed=77))
        with running.server.db.session() as session:
            key = session.get(Video, doomed).storage_key
        blob = running.server.settings.storage_dir / "blobs" / key[:2] / key
        blob.rename(tmp_path / "moved-away")  # its stored file vanishes before any worker runs
        running.start_worker()  # concurrency from PROCESSING_MAX_CONCURRENT_JOBS
        for video_id in ids:
            assert running.wait(video_id)["status"] == "completed", running.worker_logs()
        failed = running.wait(doomed)
        assert failed["status"] == "failed" and failed["attempts"] == 2  # one retry, then given up
        assert "gave up after 2 attempts" in str(failed["error_message"])
        with running.server.db.session() as session:
            spans = session.execute(select(Video.started_at, Video.finished_at).where(Video.id.in_(ids))).all()
        edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
        running_now, peak = 0, 0
        for _, step in edges:
            running_now += step
            peak = max(peak, running_now)
        assert peak == 2


def test_worker_events_reach_the_api_sockets_through_redis(backend: str, tmp_path: Path, broker: str) -> None:
    from websockets.sync.client import connect

    with cluster(backend, tmp_path, broker) as running:
        assert running.server.settings.event_bus == "redis"
        running.start_worker()
        server = running.server
        with connect(f"{server.ws_url}?subscribe=all", additional_headers={"X-API-Key": server.key_for("alice")}) as ws:
            time.sleep(0.3)
            video_id = running.upload(make_video(tmp_path / "ws.mp4", seed=91))
            types: list[str] = []
            deadline = time.monotonic() + 60
            while "processing_completed" not in types:
                assert time.monotonic() < deadline, (types, running.worker_logs())
                event = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
                if event.get("video_id") == video_id:
                    types.append(event["event_type"])
    # published by the worker process, delivered by the API's hub
    assert "processing_initiated" in types and types[-1] == "processing_completed"
