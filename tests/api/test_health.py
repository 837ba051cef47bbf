"""/health, /ready and /metrics over real HTTP."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from unittest.mock import ANY

from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from tests.conftest import RunningServer, make_settings, running_server
from tests.helpers import post_chunk, wait_for_video
from tests.media import make_video


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
    assert body["checks"]["warm_up"]["ok"]
    assert body["checks"]["database"]["ok"] and body["checks"]["storage"]["ok"]
    assert "redis" not in body["checks"]  # embedded mode needs no Redis


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
