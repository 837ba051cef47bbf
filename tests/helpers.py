"""Small client-side helpers the tests share."""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from vidgate.db.engine import Database
from vidgate.db.models import SessionStatus, UploadSession, utcnow

UPLOAD = "/v1/upload/video"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split(data: bytes, chunk_size: int) -> list[bytes]:
    return [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]


def post_chunk(
    client: httpx.Client, data: bytes, *, filename: str = "clip.mp4", content_type: str = "video/mp4", **fields: Any
) -> httpx.Response:
    form = {name: str(value) for name, value in fields.items() if value is not None}
    return client.post(UPLOAD, data=form, files={"file": (filename, data, content_type)})


def upload_chunks(
    client: httpx.Client,
    data: bytes,
    size: int,
    *,
    session_id: str,
    order: list[int] | None = None,
    **fields: Any,
) -> httpx.Response:
    """Send every chunk of ``size`` bytes (in ``order``) and return the last response."""
    chunks = split(data, size)
    response = None
    for index in order if order is not None else range(len(chunks)):
        response = post_chunk(
            client, chunks[index], session_id=session_id, chunk_index=index, total_chunks=len(chunks), **fields
        )
        assert response.status_code == 200, response.text
    assert response is not None
    return response


def blob_path(storage_dir: Path, digest: str) -> Path:
    return storage_dir / "blobs" / digest[:2] / digest


def error_code(response: httpx.Response) -> str:
    body = response.json()
    assert body["success"] is False, body
    return str(body["error"]["code"])


def wait_for_video(client: httpx.Client, video_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll GET /v1/videos/{id} until processing ends; return the video."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        video: dict[str, Any] = client.get(f"/v1/videos/{video_id}").json()["data"]
        if video["status"] in ("completed", "failed"):
            return video
        assert time.monotonic() < deadline, f"video {video_id} still {video['status']} after {timeout} s"
        time.sleep(0.1)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(interval)


@contextlib.contextmanager
def serve(
    env: dict[str, str], port: int, cwd: Path | None = None, command: Sequence[str] = (sys.executable, "-m", "vidgate")
) -> Iterator[subprocess.Popen[str]]:
    """A real `vidgate serve` (``command`` is how vidgate is started) on ``port`` until /health
    answers; stopped with SIGTERM after the block (its output stays readable on ``stdout``)."""
    process = subprocess.Popen(
        [*command, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"vidgate serve exited: {process.stdout.read() if process.stdout else ''}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("vidgate serve did not become healthy")
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def role_client(server: Any, user: str, role: str) -> httpx.Client:
    """A client of ``server`` with a new key of ``role`` for ``user`` (a RunningServer)."""
    from vidgate.auth import create_key
    from vidgate.roles import Role

    key, _ = create_key(server.db, user, label=f"{role} key", role=Role(role))
    return httpx.Client(base_url=server.base_url, headers={"X-API-Key": key}, timeout=30)


def collect_events(
    socket: Any, until: str | Callable[[dict[str, Any]], bool], timeout: float = 60.0
) -> list[dict[str, Any]]:
    """Events received on a /ws ``socket`` (a websockets sync client) up to and including the
    first that is of type ``until`` (or for which ``until(event)`` holds); heartbeats left out."""
    done = until if callable(until) else (lambda event: event["event_type"] == until)
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not events or not done(events[-1]):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"never came: {until} (got {[e['event_type'] for e in events][-20:]})"
        event = json.loads(socket.recv(timeout=remaining))
        if event["event_type"] != "heartbeat":
            events.append(event)
    return events


def drain_events(socket: Any, seconds: float = 1.0) -> list[dict[str, Any]]:
    """Whatever else a /ws ``socket`` receives within ``seconds`` (heartbeats left out)."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            event = json.loads(socket.recv(timeout=remaining))
        except TimeoutError:
            break
        if event["event_type"] != "heartbeat":
            events.append(event)
    return events


def active_session_row(db: Database, filename: str = "a.mp4") -> str:
    """The id of a new active one-chunk session row of alice (what part stores key uploads by)."""
    now = utcnow()
    with db.session() as tx:
        row = UploadSession(
            session_id=uuid.uuid4().hex,
            filename=filename,
            total_chunks=1,
            user_id="alice",
            username="alice",
            status=SessionStatus.ACTIVE,
            created_at=now,
            last_updated=now,
            expires_at=now + timedelta(hours=1),
        )
        tx.add(row)
        tx.flush()
        return str(row.id)


@contextlib.contextmanager
def sqlite_write_lock_held(db: Database) -> Iterator[None]:
    """Another connection holds the SQLite database's write lock meanwhile."""
    database = db.engine.url.database
    assert database, "an SQLite file"
    other = sqlite3.connect(database, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()


def finishes_at_once(work: Callable[[], Any], seconds: float = 10.0) -> Any:
    """``work``'s result, which must come well before SQLite's busy timeout (30 s) would end a wait."""
    outcome: list[Any] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as exc:  # raised in the caller, not lost in the thread
            failed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if failed:
        raise failed[0]
    assert outcome, f"still waiting after {seconds} s: it asked for the write lock"
    return outcome[0]
