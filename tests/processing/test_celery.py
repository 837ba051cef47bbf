"""The distributed mode against the real Redis on 127.0.0.1:6379 and real `vidgate worker`
processes: end to end, priorities, the seed's other tasks, settings, events through Redis
(the killed worker and the Redis outage are in tests/chaos/test_worker_faults.py)."""

from __future__ import annotations

import json
import signal
import socket
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, update

from tests.cluster import cluster
from tests.conftest import free_port
from tests.helpers import post_chunk
from tests.media import make_scene_video, make_video
from vidgate.db.models import Content, UploadSession, Video, VideoStatus, utcnow
from vidgate.events.bus import EVENTS_CHANNEL
from vidgate.events.schema import FailureData, ProcessingFailed, from_bus, to_wire
from vidgate.processing.celery_queue import create_celery


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
                seen.append(from_bus(message["data"]).event_id)
        # cleanup_expired_sessions runs on the beat schedule: an expired session gets swept.
        with running.server.client() as client:
            post_chunk(client, b"\x00" * 10, session_id="stale", chunk_index=1, total_chunks=3)
        with running.server.db.session() as session:
            session.execute(
                update(UploadSession)
                .where(UploadSession.session_id == "stale")
                .values(last_updated=utcnow() - timedelta(days=30))  # idle far past the timeout
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


def test_worker_concurrency_and_retries_come_from_settings(backend: str, tmp_path: Path, broker: str) -> None:
    with cluster(backend, tmp_path, broker, max_concurrent_jobs=2, max_retries=1, retry_backoff_seconds=0.2) as running:
        ids = [
            running.upload(make_scene_video(tmp_path / f"c{i}.mp4", seconds=10, width=640, height=360, seed=400 + i))
            for i in range(6)
        ]
        doomed = running.upload(make_video(tmp_path / "doomed.mp4", seed=77))
        with running.server.db.session() as session:
            key = session.get_one(Content, session.get_one(Video, doomed).content_id).storage_key
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


def test_a_named_worker_logs_its_name_and_guards_its_metrics(backend: str, tmp_path: Path, broker: str) -> None:
    """--hostname names the worker in its JSON logs and its jobs' leases; --metrics-host binds
    the metrics endpoint there only; METRICS_TOKEN guards it; the beat's cleanup counts show on
    it; its prometheus folder is removed when it exits."""
    port = free_port()
    host = socket.gethostname()
    with cluster(backend, tmp_path, broker) as running:
        running.env.update(LOG_FORMAT="json", METRICS_TOKEN="scrape-secret", UPLOAD_CLEANUP_INTERVAL_SECONDS="1")
        worker = running.start_worker(
            "--hostname", "gpu-1", "--metrics-port", str(port), "--metrics-host", "127.0.0.2", "--beat"
        )
        video_id = running.upload(make_video(tmp_path / "named.mp4", seed=95))
        assert running.wait(video_id)["status"] == "completed", running.worker_logs()
        with running.server.db.session() as session:
            assert session.get_one(Video, video_id).lease_holder == f"gpu-1@{host}"
        (folder,) = Path(tempfile.gettempdir()).glob(f"vidgate-metrics-{worker.pid}-*")

        url = f"http://127.0.0.2:{port}/metrics"
        refused = httpx.get(url, timeout=5)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert refused.json()["error"]["code"] == "unauthenticated"
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)  # bound to 127.0.0.2 only
        deadline = time.monotonic() + 60
        while True:  # the beat's first cleanup runs an interval after start
            scraped = httpx.get(url, headers={"Authorization": "Bearer scrape-secret"}, timeout=5)
            assert scraped.status_code == 200
            samples = _samples(scraped.text)
            if samples.get(("vidgate_cleanup_runs_total", ()), 0) >= 1:
                break
            assert time.monotonic() < deadline, running.worker_logs()
            time.sleep(0.2)
        assert ("vidgate_cleanup_total", (("action", "expired_sessions"),)) in samples
        assert samples[("vidgate_processing_jobs_total", (("outcome", "completed"),))] >= 1

        worker.send_signal(signal.SIGTERM)  # a warm shutdown
        assert worker.wait(timeout=60) == 0
        assert not folder.exists()
    records = [json.loads(line) for line in (tmp_path / "worker-0.log").read_text().splitlines() if line[:1] == "{"]
    assert records and all(record.get("worker") == f"gpu-1@{host}" for record in records)
    (started,) = [r for r in records if r.get("event") == "processing_initiated" and r.get("video_id") == video_id]
    assert started["attempt"] == 1 and "attempt 1" in started["message"]


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_beat_sweep_hands_on_a_job_whose_lease_ran_out(backend: str, tmp_path: Path, broker: str) -> None:
    """The beat schedule sweeps too: here the API's own dispatcher sleeps an hour, so only
    the worker's beat can notice the dead worker's job."""
    with cluster(backend, tmp_path, broker, dispatch_interval_seconds=3600) as running:
        running.env["PROCESSING_DISPATCH_INTERVAL_SECONDS"] = "0.5"  # the worker's beat: every 0.5 s
        running.start_worker("--beat", "--hostname", "beater")
        video_id = running.upload(make_video(tmp_path / "swept.mp4", seed=97))  # handed over at once
        assert running.wait(video_id)["status"] == "completed", running.worker_logs()
        with running.server.db.session() as session:  # as a worker that died mid-job leaves it
            session.execute(
                update(Video)
                .where(Video.id == video_id)
                .values(
                    status=VideoStatus.PROCESSING,
                    lease_holder="dead@elsewhere",
                    lease_expires_at=utcnow() - timedelta(seconds=1),
                )
            )
        deadline = time.monotonic() + 60
        while True:
            with running.server.db.session() as session:
                video = session.get_one(Video, video_id)
                if video.status is VideoStatus.COMPLETED:
                    break
            assert time.monotonic() < deadline, running.worker_logs()
            time.sleep(0.2)
        assert video.attempts == 2 and video.lease_holder == f"beater@{socket.gethostname()}"
        log = (tmp_path / "worker-0.log").read_text()
        assert "the lease of attempt 1 (worker dead@elsewhere) ran out; queued again" in log
