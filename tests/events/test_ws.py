"""/ws over a real socket: what each user receives, replay after a reconnect, heartbeats, slow
clients, authentication, and the switch that turns the endpoint off."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.conftest import RunningServer, database_url_for, make_settings, running_server
from tests.helpers import collect_events, drain_events, post_chunk, split, wait_for_video, wait_until
from tests.media import make_video
from vidgate.events.schema import FailureData, UploadFailed

CHUNK = 64 * 1024


def open_socket(server: RunningServer, user: str, query: str = "subscribe=all") -> ClientConnection:
    return connect(f"{server.ws_url}?{query}", additional_headers={"X-API-Key": server.key_for(user)})


def upload_in_chunks(server: RunningServer, user: str, data: bytes, session_id: str, indexes: list[int]) -> Any:
    chunks = split(data, CHUNK)
    with server.client(user) as client:
        response = None
        for index in indexes:
            response = post_chunk(
                client, chunks[index], session_id=session_id, chunk_index=index, total_chunks=len(chunks)
            )
            assert response.status_code == 200, response.text
    return response


def test_the_owner_sees_every_step_and_nobody_else_does(server: RunningServer, tmp_path: Path) -> None:
    data = make_video(tmp_path / "events.mp4", seed=uuid.uuid4().int % 10_000).read_bytes()
    session_id = f"ev-{uuid.uuid4().hex}"
    with open_socket(server, "alice") as alice, open_socket(server, "bob") as bob:
        time.sleep(0.2)
        upload_in_chunks(server, "alice", data, session_id, list(range(len(split(data, CHUNK)))))
        events = collect_events(alice, "processing_completed")
        assert drain_events(bob, 1.0) == []
    types = [e["event_type"] for e in events]
    assert types[0] == "upload_started"
    assert "upload_progress" in types and "upload_completed" in types and "processing_initiated" in types
    assert types.index("upload_completed") < types.index("processing_initiated")
    numbers = [e["sequence"] for e in events]  # alice's stream: one number per event, no gap
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    completed = events[-1]
    assert completed["data"]["result"]["video_id"] == completed["video_id"]
    assert completed["data"]["result_url"] == f"/v1/videos/{completed['video_id']}/result"
    assert "audience" not in completed
    progress = [e for e in events if e["event_type"] == "upload_progress"]
    assert progress[-1]["data"]["progress_percentage"] == 100.0


def test_a_client_that_reconnects_gets_what_it_missed(server: RunningServer, tmp_path: Path) -> None:
    data = make_video(tmp_path / "replay.mp4", seed=uuid.uuid4().int % 10_000).read_bytes()
    session_id = f"rp-{uuid.uuid4().hex}"
    total = len(split(data, CHUNK))
    upload_in_chunks(server, "alice", data, session_id, [0])
    with open_socket(server, "alice", f"session_id={session_id}&since=0") as first:
        seen = collect_events(first, "upload_progress", timeout=10)  # replayed: started, then progress
        assert [e["event_type"] for e in seen][:1] == ["upload_started"]
    last = seen[-1]["sequence"]
    upload_in_chunks(server, "alice", data, session_id, list(range(1, total)))  # while disconnected
    with open_socket(server, "alice", f"session_id={session_id}&since={last}") as again:
        missed = collect_events(again, "upload_completed", timeout=10)
    numbers = [e["sequence"] for e in missed]  # alice's numbers: other sessions of hers may come between
    assert numbers == sorted(set(numbers)) and numbers[0] > last
    assert {e["session_id"] for e in missed} == {session_id}
    with open_socket(server, "bob", "subscribe=none") as bob:
        bob.send(json.dumps({"action": "subscribe", "session_id": session_id, "since": 0}))
        refused = json.loads(bob.recv(timeout=5))
    assert (refused["event_type"], refused["data"]["code"]) == ("error", "session_not_found")


def test_a_bad_key_is_refused(server: RunningServer) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{server.ws_url}?api_key=vg_wrong").recv(timeout=2)
    assert refused.value.response.status_code == 403
    with connect(f"{server.ws_url}?api_key={server.key_for('alice')}&subscribe=all") as via_query:
        via_query.send(json.dumps({"action": "dance"}))
        answer = json.loads(via_query.recv(timeout=5))
    assert answer["data"]["code"] == "invalid_message"


@pytest.fixture(scope="module")
def tuned_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    data_dir = tmp_path_factory.mktemp(f"ws-{backend}")
    with database_url_for(backend, data_dir) as url:
        settings = make_settings(data_dir, url, websocket={"heartbeat_interval": 0.2, "queue_size": 8})
        with running_server(settings) as running:
            yield running


def test_heartbeats(tuned_server: RunningServer) -> None:
    with open_socket(tuned_server, "alice") as socket:
        beats = [json.loads(socket.recv(timeout=2)) for _ in range(3)]
    assert [b["event_type"] for b in beats] == ["heartbeat"] * 3
    assert beats[0]["data"]["interval_seconds"] == 0.2


def test_the_endpoint_can_be_switched_off(backend: str, tmp_path: Path) -> None:
    with database_url_for(backend, tmp_path) as url:
        settings = make_settings(tmp_path, url, websocket={"enabled": False})
        with running_server(settings) as server, pytest.raises(InvalidStatus):
            open_socket(server, "alice").recv(timeout=2)


def test_duplicate_uploads_are_announced_with_the_cached_result(server: RunningServer, tmp_path: Path) -> None:
    data = make_video(tmp_path / "dup.mp4", seed=uuid.uuid4().int % 10_000).read_bytes()
    with server.client() as client:
        video_id = post_chunk(client, data).json()["data"]["video_id"]
        wait_for_video(client, video_id)
        with open_socket(server, "alice") as socket:
            time.sleep(0.2)
            post_chunk(client, data)
            events = collect_events(socket, "duplicate_detected", timeout=10)
    assert events[-1]["data"]["cached_result"]["video_id"] == video_id


@pytest.fixture
def small_buffer_server(backend: str, tmp_path: Path) -> Iterator[RunningServer]:
    with (
        database_url_for(backend, tmp_path) as url,
        running_server(make_settings(tmp_path, url, websocket={"queue_size": 64})) as running,
    ):
        yield running


def test_a_client_that_stops_reading_is_closed_without_holding_up_others(small_buffer_server: RunningServer) -> None:
    """The slow client reads nothing, so the kernel buffers fill and its queue of 64 overflows (8 MB are sent);
    the server drops it with 4008 while a second client of the same user gets every event."""
    server = small_buffer_server
    services = server.services
    slow = raw_socket_that_never_reads(server, "alice")
    with slow, open_socket(server, "alice") as fast:
        time.sleep(0.2)
        assert len(services.hub.connections) == 2
        alice_id = next(iter(services.hub.connections)).user_id
        session_id = f"flood-{uuid.uuid4().hex}"
        total = 2000
        reason = b"the client could not keep up"
        close_frame = bytes([0x88, 2 + len(reason)]) + (4008).to_bytes(2, "big") + reason

        def publish() -> None:
            for n in range(total):
                failure = FailureData(error_code="flood", message=f"{n} {'x' * 4000}")
                services.bus.publish(UploadFailed(session_id=session_id, audience=[alice_id], data=failure))
                time.sleep(0.002)  # a steady 8 MB/s that a reading client keeps up with

        received: list[int] = []

        def read_fast() -> None:
            while len(received) < total:
                event = json.loads(fast.recv(timeout=10))
                if event["event_type"] == "upload_failed":
                    received.append(int(event["data"]["message"].split()[0]))

        with ThreadPoolExecutor(2) as pool:
            published, read = pool.submit(publish), pool.submit(read_fast)
            wait_until(lambda: len(services.hub.connections) == 1, timeout=10)
            slow.settimeout(10)
            tail = b""
            while not tail.endswith(close_frame):  # now read what the server sent, up to its close frame
                block = slow.recv(1 << 20)
                assert block, "the server hung up without a close frame"
                tail = (tail + block)[-256:]
            published.result(timeout=30)
            read.result(timeout=30)
    assert received == list(range(total))


def test_a_client_that_vanished_is_dropped(tuned_server: RunningServer) -> None:
    """No close, no FIN: the client just stops answering. The server's pings go unanswered and
    it drops the connection within a heartbeat interval or two (0.2 s here)."""
    hub = tuned_server.services.hub
    with raw_socket_that_never_reads(tuned_server, "alice"):
        wait_until(lambda: len(hub.connections) == 1, timeout=5)
        wait_until(lambda: len(hub.connections) == 0, timeout=5)


def raw_socket_that_never_reads(server: RunningServer, user: str) -> socket.socket:
    """A WebSocket handshake by hand on a socket with a tiny receive buffer; nothing reads it after."""
    host, port = server.base_url.removeprefix("http://").split(":")
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    raw.sendall(
        (
            "GET /ws?subscribe=all HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"X-API-Key: {server.key_for(user)}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += raw.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return raw


@pytest.mark.parametrize("compression", [False, True])
def test_permessage_deflate_is_offered_only_when_configured(tmp_path: Path, compression: bool) -> None:
    """WEBSOCKET_COMPRESSION: a client that offers permessage-deflate gets it only when it is on
    (off by default: compressing every event once per socket dominated the event loop)."""
    with (
        database_url_for("sqlite", tmp_path) as url,
        running_server(make_settings(tmp_path, url, websocket={"compression": compression})) as server,
        open_socket(server, "alice") as socket,  # the websockets client offers deflate by default
    ):
        assert socket.response is not None
        extensions = socket.response.headers.get("Sec-WebSocket-Extensions") or ""
    assert ("permessage-deflate" in extensions) is compression
