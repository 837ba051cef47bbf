"""Tenant isolation in dedup: bob uploads the bytes of alice's private video.

Whatever bob can read or receive (upload answers and tus headers, his session, his video and
its result, /ws events, webhooks to a real local receiver) carries nothing of alice's
record: not her video id, session id, file name, times or priority. With DEDUP_SCOPE=owner
bob cannot even tell that the bytes were known: his answers and events have the shape of a
first upload's. With DEDUP_SCOPE=global he is told it is a duplicate and gets the stored
result at once, still in a record of his own.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from websockets.sync.client import ClientConnection, connect

from tests.conftest import RunningServer, database_url_for, make_settings, running_server
from tests.helpers import collect_events, drain_events, post_chunk, sha256, wait_for_video, wait_until
from tests.media import make_video
from vidgate.db.models import Content, Video, VideoAnalysisResultRow
from vidgate.events.schema import EventType
from vidgate.events.webhooks import set_webhook

PRIVATE_NAME = "board-meeting-private.mp4"
TUS = {"Tus-Resumable": "1.0.0"}


class Receiver:
    """A real HTTP webhook receiver that accepts and records every delivery."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.raw: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.raw.append(json.dumps(dict(self.headers)) + body.decode())
                receiver.bodies.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def types(self) -> list[str]:
        return [str(body["event_type"]) for body in self.bodies]

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module", params=["owner", "global"])
def isolated(
    request: pytest.FixtureRequest, backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """A server in one DEDUP_SCOPE that posts every event type to webhooks, quickly."""
    scope = str(request.param)
    data_dir = tmp_path_factory.mktemp(f"isolation-{scope}-{backend}")
    with database_url_for(backend, data_dir) as url:
        settings = make_settings(
            data_dir,
            url,
            upload={"dedup_scope": scope},
            webhook={
                "event_types": [t.value for t in EventType if t.value != "heartbeat"],
                "poll_interval_seconds": 0.1,
            },
        )
        with running_server(settings) as running:
            yield running


def socket_for(server: RunningServer, user: str) -> ClientConnection:
    return connect(f"{server.ws_url}?subscribe=all", additional_headers={"X-API-Key": server.key_for(user)})


def shape(events: list[dict[str, Any]]) -> list[tuple[str, tuple[str, ...]]]:
    """Event types with their data's keys, repeats of one type in a row counted once (how many
    progress events a run emits depends on how long it takes)."""
    result: list[tuple[str, tuple[str, ...]]] = []
    for event in events:
        item = (str(event["event_type"]), tuple(sorted(event.get("data", {}))))
        if not result or result[-1] != item:
            result.append(item)
    return result


def seed_upload(client: httpx.Client, data: bytes, name: str, priority: int) -> dict[str, Any]:
    """One whole-file POST; returns what bob can read of it."""
    response = post_chunk(client, data, filename=name, priority=priority, options='{"model_type": "resnet50"}')
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return {"answers": [body], "headers": [dict(response.headers)], "data": body["data"], "message": body["message"]}


def tus_upload(client: httpx.Client, data: bytes, name: str, priority: int) -> dict[str, Any]:
    """Create, two PATCHes, HEAD; returns what the client can read of it."""
    meta = ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}"
        for key, value in (("filename", name), ("filetype", "video/mp4"), ("priority", str(priority)))
    )
    created = client.post("/v1/tus/", headers={**TUS, "Upload-Length": str(len(data)), "Upload-Metadata": meta})
    assert created.status_code == 201, created.text
    url = created.headers["location"]
    half = len(data) // 2
    responses = [created]
    for offset, body in ((0, data[:half]), (half, data[half:])):
        patched = client.patch(
            url,
            content=body,
            headers={**TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": str(offset)},
        )
        assert patched.status_code == 204, patched.text
        responses.append(patched)
    responses.append(client.head(url, headers=TUS))
    upload_id = url.rstrip("/").rsplit("/", 1)[-1]
    session = client.get(f"/v1/upload/video/session/{upload_id}").json()
    headers = [
        {k.lower(): v for k, v in r.headers.items() if k.lower() not in ("date", "content-length")} for r in responses
    ]
    return {"answers": [session], "headers": headers, "data": session["data"], "message": None}


UPLOADERS = {"seed": seed_upload, "tus": tus_upload}


def everything_bob_can_see(
    server: RunningServer, bob: str, upload: dict[str, Any], events: list[dict[str, Any]], hooks: Receiver
) -> tuple[str, dict[str, Any]]:
    """Every answer bob's client can get about his upload, as one text, and his video."""
    video_id = upload["data"]["video_id"]
    with server.client(bob) as client:
        video = wait_for_video(client, video_id)
        answers = [
            client.get(f"/v1/videos/{video_id}").json(),
            client.get(f"/v1/videos/{video_id}/result").json(),
            client.get(f"/v1/upload/video/session/{upload['data']['session_id']}").json(),
        ]
    return json.dumps([upload["answers"], upload["headers"], answers, events, hooks.raw]), video


@pytest.mark.parametrize("protocol", ["seed", "tus"])
def test_bob_sees_nothing_of_alices_video(
    isolated: RunningServer, tmp_path: Path, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = isolated
    scope = server.settings.upload.dedup_scope
    alice, bob = f"alice-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"
    data = make_video(tmp_path / "private.mp4", seed=uuid.uuid4().int % 100_000).read_bytes()
    fresh = make_video(tmp_path / "fresh.mp4", seed=uuid.uuid4().int % 100_000).read_bytes()
    alice_hooks, bob_hooks = Receiver(), Receiver()
    upload = UPLOADERS[protocol]
    try:
        for user, hooks in ((alice, alice_hooks), (bob, bob_hooks)):
            server.key_for(user)  # makes the account
            set_webhook(server.db, user, hooks.url)
        with socket_for(server, alice) as alice_socket, socket_for(server, bob) as bob_socket:
            # alice's private upload, all the way through
            with server.client(alice) as client:
                mine = seed_upload(client, data, PRIVATE_NAME, priority=9)["data"]
                secret = wait_for_video(client, mine["video_id"])
                secret_session = client.get(f"/v1/upload/video/session/{mine['session_id']}").json()["data"]
            collect_events(alice_socket, "processing_completed")
            wait_until(lambda: "processing_completed" in alice_hooks.types(), timeout=30)
            alice_hooks_before = len(alice_hooks.bodies)

            # a first upload of bob's (bytes nobody has): the shape every upload of his must have
            with server.client(bob) as client:
                first = upload(client, fresh, "first.mp4", 2)
            first_events = collect_events(bob_socket, "processing_completed")
            wait_until(lambda: bob_hooks.types().count("processing_completed") == 1, timeout=30)
            bob_hooks.bodies.clear()
            bob_hooks.raw.clear()

            # bob sends alice's bytes under his own name
            caplog.clear()
            with caplog.at_level(logging.INFO), server.client(bob) as client:
                his = upload(client, data, "b.mp4", 2)
                last = "processing_completed" if scope == "owner" else "duplicate_detected"
                events = collect_events(bob_socket, last) + drain_events(bob_socket)
                wait_until(lambda: last in bob_hooks.types(), timeout=30)
                logged = list(caplog.records)
            seen, video = everything_bob_can_see(server, bob, his, events, bob_hooks)
            alice_heard = drain_events(alice_socket)

        # nothing of alice's record anywhere bob looks
        for value in (
            mine["video_id"],
            mine["session_id"],
            PRIVATE_NAME,
            "board-meeting",
            secret["created_at"],
            secret_session["created_at"],
            secret_session["completed_at"],
            secret["finished_at"],
        ):
            assert value not in seen, value
        assert his["data"]["video_id"] != mine["video_id"]
        assert (video["filename"], video["priority"], video["status"]) == ("b.mp4", 2, "completed")
        assert video["content_hash"] == sha256(data)  # his own bytes' hash: he sent them
        assert {e["video_id"] for e in events if e["video_id"]} == {his["data"]["video_id"]}
        assert {b["video_id"] for b in bob_hooks.bodies if b["video_id"]} == {his["data"]["video_id"]}

        if scope == "owner":  # bob cannot tell the bytes were known
            assert his["data"]["duplicate"] is False and first["data"]["duplicate"] is False
            assert his["data"].keys() == first["data"].keys() and his["message"] == first["message"]
            assert his["data"].get("result") is None
            assert [sorted(h) for h in his["headers"]] == [sorted(h) for h in first["headers"]]
            assert all(h.get("vidgate-duplicate", "false") == "false" for h in his["headers"])
            assert shape(events) == shape(first_events)
            assert sorted(set(bob_hooks.types())) == sorted({e["event_type"] for e in first_events})
            assert video["attempts"] == 1
            completed = next(e for e in events if e["event_type"] == "processing_completed")
            assert completed["data"]["result"]["video_id"] == his["data"]["video_id"]
            his_time = datetime.fromisoformat(completed["data"]["result"]["created_at"])
            assert his_time > datetime.fromisoformat(secret["finished_at"])  # his video's time, not the analysis's
        else:  # told, and answered at once from the stored result, in a record of his own
            assert his["data"]["duplicate"] is True
            if protocol == "seed":
                assert his["data"]["result"]["video_id"] == his["data"]["video_id"]
            else:
                assert his["headers"][-1]["vidgate-duplicate"] == "true"
            duplicate = next(e for e in events if e["event_type"] == "duplicate_detected")
            assert duplicate["data"]["cached_result"]["video_id"] == his["data"]["video_id"]
            assert not any(e["event_type"].startswith("processing_") for e in events)

        # alice's video is untouched, hers alone, and she heard nothing of bob's upload
        with server.client(alice) as client:
            after = client.get(f"/v1/videos/{mine['video_id']}").json()["data"]
            assert client.get(f"/v1/videos/{mine['video_id']}/result").json()["data"]["video_id"] == mine["video_id"]
        assert after == secret
        assert alice_heard == [] and len(alice_hooks.bodies) == alice_hooks_before
        with server.client(bob) as client:
            for url in (
                f"/v1/videos/{mine['video_id']}",
                f"/v1/videos/{mine['video_id']}/result",
                f"/v1/upload/video/session/{mine['session_id']}",
            ):
                assert client.get(url).status_code == 404, url
        with connect(
            f"{server.ws_url}?video_id={mine['video_id']}", additional_headers={"X-API-Key": server.key_for(bob)}
        ) as ws:
            refused = json.loads(ws.recv(timeout=10))
        assert refused["event_type"] == "error" and refused["data"]["code"] == "video_not_found"
        with server.db.session() as session:  # stored once, analysed once
            content = session.scalars(select(Content).where(Content.content_hash == sha256(data))).one()
            assert content.analyses == 1
        # the info logs of bob's upload name his session and video, never alice's (his first
        # upload's job may still be logging its end: it logs after the commit its events wait for)
        about_bob = [r for r in logged if getattr(r, "session_id", None) or getattr(r, "video_id", None)]
        assert about_bob, [r.getMessage() for r in logged]
        his_videos = {his["data"]["video_id"], first["data"]["video_id"]}
        for record in about_bob:
            assert getattr(record, "video_id", his["data"]["video_id"]) in his_videos, record.getMessage()
            assert mine["video_id"] not in record.getMessage() and PRIVATE_NAME not in record.getMessage()
        # and no metric carries a user's video id, session, file name or hash as a label
        metrics = httpx.get(f"{server.base_url}/metrics").text
        for value in (mine["video_id"], mine["session_id"], his["data"]["video_id"], "board-meeting", sha256(data)):
            assert value not in metrics, value
    finally:
        alice_hooks.close()
        bob_hooks.close()


def test_two_owners_uploading_the_same_bytes_at_once_get_one_analysis_two_videos(
    server: RunningServer, tmp_path: Path
) -> None:
    data = make_video(tmp_path / "same.mp4", seed=uuid.uuid4().int % 100_000).read_bytes()
    users = [f"racer-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    for user in users:
        server.key_for(user)
    start = threading.Barrier(len(users))
    answers: dict[str, dict[str, Any]] = {}

    def send(user: str) -> None:
        with server.client(user) as client:
            start.wait()
            response = post_chunk(client, data, filename=f"{user}.mp4")
        assert response.status_code == 200, response.text
        answers[user] = response.json()["data"]

    threads = [threading.Thread(target=send, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert set(answers) == set(users)
    videos = {user: answers[user]["video_id"] for user in users}
    assert len(set(videos.values())) == 2
    for user, video_id in videos.items():
        with server.client(user) as client:
            video = wait_for_video(client, video_id)
            assert (video["status"], video["filename"], video["attempts"]) == ("completed", f"{user}.mp4", 1)
            assert client.get(f"/v1/videos/{video_id}/result").json()["data"]["video_id"] == video_id
    with server.db.session() as session:
        content = session.scalars(select(Content).where(Content.content_hash == sha256(data))).one()
        assert content.analyses == 1  # one analysis for both
        assert session.scalar(select(func.count()).where(Video.content_id == content.id)) == 2
        assert session.scalar(select(func.count()).where(VideoAnalysisResultRow.content_id == content.id)) == 1
