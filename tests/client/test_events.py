"""Waiting for processing: woken by the video's events on /ws, and by polling where /ws is off."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningServer, database_url_for, make_settings, running_server
from tests.media import make_video
from vidgate.client import VidgateClient, WaitTimeout
from vidgate.client.events import websocket_url


@pytest.fixture(scope="module")
def held_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server whose videos stay queued: jobs go to Celery's in-memory broker, which no worker
    reads, so the test decides when a video is processed by running its job as a worker would."""
    data_dir = tmp_path_factory.mktemp(f"client-events-{backend}")
    with database_url_for(backend, data_dir) as url:
        settings = make_settings(
            data_dir,
            url,
            processing={"queue": "celery"},
            celery={"broker_url": "memory://", "result_backend": "cache+memory://"},
            upload={"locks": "file"},
            websocket={"bus": "local", "heartbeat_interval": 0.2},
        )
        with running_server(settings) as running:
            yield running


def test_wait_is_woken_by_the_video_events(held_server: RunningServer, tmp_path: Path) -> None:
    server = held_server
    video = make_video(tmp_path / "ours.mp4", frames=25, seed=uuid.uuid4().int % 2**32)
    with VidgateClient(server.base_url, server.key_for("alice"), state_dir=tmp_path / "state") as client:
        upload = client.upload(video)
        with pytest.raises(WaitTimeout):
            client.wait(upload.video_id, timeout=0.3)
        assert client.video(upload.video_id).status == "queued"

        events: list[dict[str, Any]] = []
        listening = threading.Event()

        def seen(event: dict[str, Any]) -> None:
            events.append(event)
            listening.set()  # a heartbeat: the client checked the video (queued) and now reads events

        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(client.wait, upload.video_id, timeout=60, on_event=seen)
            assert listening.wait(10)
            assert server.services.processing.run(upload.video_id).status == "completed"
            outcome = waiting.result(timeout=30)
    assert outcome.status == "completed" and outcome.result is not None
    assert outcome.result.content_hash == upload.sha256
    ours = [e["event_type"] for e in events if e.get("video_id") == upload.video_id]
    assert "processing_initiated" in ours and ours[-1] == "processing_completed"


def test_wait_polls_where_the_event_socket_is_off(backend: str, tmp_path: Path) -> None:
    with database_url_for(backend, tmp_path) as url:
        settings = make_settings(tmp_path, url, websocket={"enabled": False})
        with (
            running_server(settings) as server,
            VidgateClient(server.base_url, server.key_for("alice"), state_dir=tmp_path / "state") as client,
        ):
            video = make_video(tmp_path / "poll.mp4", frames=25, seed=uuid.uuid4().int % 2**32)
            upload = client.upload(video, wait=True, wait_timeout=60)
    assert upload.processing_status == "completed"
    assert upload.result is not None and upload.result.video_id == upload.video_id


def test_event_urls_follow_the_server_scheme() -> None:
    assert websocket_url("http://h:8000/", video_id="v", since=3) == "ws://h:8000/ws?video_id=v&since=3"
    assert websocket_url("https://h/base", video_id="v", since=0) == "wss://h/base/ws?video_id=v&since=0"
