"""/health, /ready and /metrics over real HTTP."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from pathlib import Path
from unittest.mock import ANY

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update
from websockets.sync.client import connect

from tests.conftest import RunningServer, make_settings, running_server
from tests.helpers import finishes_at_once, post_chunk, sqlite_write_lock_held, wait_for_video
from tests.media import make_video
from vidgate.db.models import UploadSession, utcnow


def scrape(server: RunningServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with server.client() as client:
        response = client.get("/metrics", headers={"X-API-Key": ""})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_health_and_ready_need_no_key(server: RunningServer) -> None:
    with server.client() as client:
        health = client.get("/health", headers={"X-API-Key": ""})
        deadline = time.monotonic() + 30
        while (ready := client.get("/ready", headers={"X-API-Key": ""})).status_code == 503:
            assert ready.json()["checks"]["warm_up"] == {"ok": False, "detail": ANY}, ready.json()
            assert time.monotonic() < deadline, "the start-up warm-up never ended"
            time.sleep(0.05)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready"
    assert body["checks"]["warm_up"]["ok"], body
    assert body["checks"]["database"]["ok"] and body["checks"]["storage"]["ok"]
    assert "redis" not in body["checks"]  # embedded mode needs no Redis


def test_ready_checks_the_database_without_its_write_lock(server: RunningServer) -> None:
    """A load balancer polls /ready every few seconds: on SQLite its database check reads
    without taking the write lock, so a long write transaction does not hold it up (it waited
    for it, up to the busy timeout, and then reported the database down)."""
    if server.db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's single writer")
    with server.client() as client, sqlite_write_lock_held(server.db):
        ready = finishes_at_once(lambda: client.get("/ready", headers={"X-API-Key": ""}))
    assert ready.json()["checks"]["database"] == {"ok": True, "detail": None}, ready.json()


def test_these_need_no_key_and_everything_else_does(server: RunningServer) -> None:
    """What the README promises: /health, /ready, /metrics (unless METRICS_TOKEN), /docs,
    /openapi.json and the page; every /v1 route needs a key."""
    with httpx.Client(base_url=server.base_url, timeout=30) as anonymous:
        for path in ("/health", "/metrics", "/docs", "/redoc", "/openapi.json", "/", "/index.html"):
            assert anonymous.get(path).status_code == 200, path
        assert anonymous.get("/ready").status_code in (200, 503)  # 503 only while warming up
        paths = anonymous.get("/openapi.json").json()["paths"]
        assert all(path.startswith(("/v1/", "/health", "/ready", "/metrics")) for path in paths), paths
        assert anonymous.get("/v1/videos/x").status_code == 401
        assert anonymous.post("/v1/upload/video").status_code == 401
        assert anonymous.get("/v1/upload/video/session/x").status_code == 401
        assert anonymous.options("/v1/tus/").status_code == 204  # tus discovery


def test_metrics_token_guards_the_metrics(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", metrics={"token": "scrape-secret"})
    with running_server(settings) as server, httpx.Client(base_url=server.base_url, timeout=30) as client:
        refused = client.get("/metrics")
        with_api_key = client.get("/metrics", headers={"Authorization": f"Bearer {server.key_for('alice')}"})
        wrong = client.get("/metrics", headers={"Authorization": "Bearer scrape-secreT"})
        scraped = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
        health = client.get("/health")
    for response in (refused, with_api_key, wrong):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json() == {
            "success": False,
            "error": {"code": "unauthenticated", "message": ANY},
        }
        assert "METRICS_TOKEN" in response.json()["error"]["message"]
        assert "scrape-secret" not in response.text
    assert scraped.status_code == 200 and "vidgate_uploads_total" in scraped.text
    assert health.status_code == 200  # the token guards /metrics only


def test_cleanup_and_expiry_counts_are_scraped(server: RunningServer) -> None:
    before = scrape(server)
    for action in ("expired_sessions", "reassembled_sessions", "failed_assemblies", "orphan_uploads_removed"):
        assert ("vidgate_cleanup_total", (("action", action),)) in before  # shown from the start, at 0 if so
    assert value(before, "vidgate_cleanup_runs_total") >= 1  # serve sweeps at start
    session_id = f"stale-{uuid.uuid4().hex}"
    with server.client() as client:
        assert post_chunk(client, b"\x00" * 10, session_id=session_id, chunk_index=1, total_chunks=3).status_code == 200
    with server.db.session() as session:
        session.execute(
            update(UploadSession)
            .where(UploadSession.session_id == session_id)
            .values(last_updated=utcnow() - timedelta(days=30))  # idle far past the timeout
        )
    server.services.cleanup.run()
    after = scrape(server)
    assert value(after, "vidgate_cleanup_runs_total") >= value(before, "vidgate_cleanup_runs_total") + 1
    expired = value(after, "vidgate_cleanup_total", action="expired_sessions")
    assert expired >= value(before, "vidgate_cleanup_total", action="expired_sessions") + 1
    assert value(after, "vidgate_uploads_total", protocol="chunks", outcome="expired") >= 1


def test_ready_says_503_and_why_when_redis_is_unreachable(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        upload={"locks": "redis"},
        websocket={"redis_url": "redis://127.0.0.1:1/0"},
    )
    with running_server(settings) as server, server.client() as client:
        response = client.get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["database"]["ok"]
    assert not body["checks"]["redis"]["ok"]
    assert "Connection" in body["checks"]["redis"]["detail"]


def test_metrics_count_uploads_bytes_dedup_requests_sockets_and_processing(
    server: RunningServer, tmp_path: Path
) -> None:
    data = make_video(tmp_path / "m.mp4", seed=uuid.uuid4().int % 100_000).read_bytes()
    before = scrape(server)
    with server.client() as client:
        first = post_chunk(client, data, session_id=f"m-{uuid.uuid4().hex}")
        assert first.status_code == 200
        wait_for_video(client, first.json()["data"]["video_id"])
        again = post_chunk(client, data, session_id=f"m-{uuid.uuid4().hex}")
        assert again.json()["data"]["duplicate"] is True
        refused = post_chunk(client, b"\x00" * 4096, session_id=f"m-{uuid.uuid4().hex}")
        assert refused.status_code == 415
    with connect(f"{server.ws_url}?subscribe=all", additional_headers={"X-API-Key": server.key_for("alice")}):
        during = scrape(server)
    after = scrape(server)

    def grew(name: str, by: float = 1, **labels: str) -> bool:
        return value(after, name, **labels) - value(before, name, **labels) >= by

    assert grew("vidgate_uploads_total", protocol="chunks", outcome="completed")
    assert grew("vidgate_uploads_total", protocol="chunks", outcome="duplicate")
    assert grew("vidgate_upload_failures_total", code="unrecognized_format")
    assert grew("vidgate_upload_received_bytes_total", by=2 * len(data), protocol="chunks")
    assert grew("vidgate_dedup_lookups_total", by=2) and grew("vidgate_dedup_hits_total")
    assert grew("vidgate_upload_duration_seconds_count", by=2, protocol="chunks")
    assert grew("vidgate_processing_jobs_total", outcome="completed")
    assert grew("vidgate_processing_stage_seconds_count", stage="total")
    assert grew("vidgate_processing_stage_seconds_count", stage="phash")
    assert grew("vidgate_http_requests_total", by=2, method="POST", route="/v1/upload/video", status="200")
    assert grew("vidgate_http_requests_total", method="POST", route="/v1/upload/video", status="415")
    assert value(during, "vidgate_websocket_connections") - value(after, "vidgate_websocket_connections") >= 1


def test_queue_length_per_priority_comes_from_the_database(tmp_path: Path) -> None:
    """A queue that never runs jobs (no worker threads): queued videos show up per priority."""
    settings = make_settings(
        tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", processing={"max_concurrent_jobs": 1, "queue": "inline"}
    )
    with running_server(settings) as server:
        server.services.processing.queue = None  # jobs stay queued: nobody takes them
        with server.client() as client:
            for priority in (2, 9, 9):
                data = make_video(tmp_path / f"q{uuid.uuid4().hex}.mp4", seed=uuid.uuid4().int % 100_000).read_bytes()
                response = post_chunk(client, data, session_id=f"q-{uuid.uuid4().hex}", priority=priority)
                assert response.status_code == 200, response.text
        samples = scrape(server)
    assert value(samples, "vidgate_processing_queue_length", priority="9", status="queued") == 2
    assert value(samples, "vidgate_processing_queue_length", priority="2", status="queued") == 1
    shown = {labels for name, labels in samples if name == "vidgate_processing_queue_length"}
    assert shown == {
        (("priority", str(priority)), ("status", status))
        for priority in range(1, 11)
        for status in ("processing", "queued")
    }  # an empty priority shows 0 instead of vanishing
    assert value(samples, "vidgate_processing_queue_length", priority="5", status="queued") == 0
    assert ("vidgate_processing_queue_length", (("priority", "5"), ("status", "queued"))) in samples


def test_the_servers_garbage_collections_are_timed(server: RunningServer) -> None:
    """The serve process times its collections from start-up (vidgate_gc_pause_seconds): the
    server here runs in this process, so a collection made now is one of its own."""
    import gc

    before = value(scrape(server), "vidgate_gc_pause_seconds_count", generation="2")
    gc.collect()
    after = scrape(server)
    assert value(after, "vidgate_gc_pause_seconds_count", generation="2") >= before + 1
    assert value(after, "vidgate_gc_pause_seconds_bucket", generation="2", le="+Inf") >= before + 1
