"""kill -9 of the server while 20 chunked and 5 tus uploads are in flight. The server is
restarted on the same data; each client resumes from the server's own record (missing_chunks,
or the tus offset); every file completes with the right SHA-256, and after cleanup no part
file, staging folder or chunk row is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from tests.conftest import free_port
from tests.helpers import sha256, split
from tests.media import make_video
from vidgate.auth import create_key
from vidgate.config import load_settings
from vidgate.db import migrate
from vidgate.db.engine import Database
from vidgate.db.models import UploadChunk, utcnow
from vidgate.wiring import build_services

CHUNK = 32 * 1024
PAUSE = 0.05  # between chunks, so that every upload is still in flight when the server dies
TUS = {"Tus-Resumable": "1.0.0"}
ENV = {
    "AUTH_CREATE_DEV_KEY": "false",
    "VIDGATE_LOG_LEVEL": "warning",
    "UPLOAD_CLEANUP_INTERVAL_SECONDS": "1",
    "UPLOAD_ASSEMBLY_STALL_SECONDS": "3",
}


@dataclass
class Server:
    data_dir: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("VIDGATE_", "UPLOAD_", "DATABASE_"))}
        return {**clean, **ENV, "VIDGATE_DATA_DIR": str(self.data_dir)}

    def start(self) -> None:
        log = (self.data_dir / "server.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vidgate", "serve", "--port", str(self.port)],
            env=self.env(),
            cwd=self.data_dir,
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        log_text = (self.data_dir / "server.log").read_text()[-3000:]
        raise RuntimeError(f"the server did not start (exit {self.process.poll()}): {log_text}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@dataclass
class Outcome:
    name: str
    expected: str
    stored: str | None = None
    acknowledged: int = 0
    errors: list[str] = field(default_factory=list)

    def answered(self, response: httpx.Response, expected: int, what: str) -> bool:
        """Count a piece the server acknowledged; note anything else and back off a little."""
        if response.status_code != expected:
            self.errors.append(f"{what}: {response.status_code} {response.text[:200]}")
            time.sleep(0.2)
            return False
        self.acknowledged += 1
        time.sleep(PAUSE)
        return True


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path / "data", free_port())
    running.data_dir.mkdir()
    try:
        yield running
    finally:
        running.stop()


def keep_trying(step: Callable[[], bool], deadline: float) -> None:
    """Run ``step`` until it reports the upload done; the server being away is just a retry."""
    while time.monotonic() < deadline:
        try:
            if step():
                return
        except httpx.TransportError:
            time.sleep(0.1)


def chunked_upload(
    server: Server, key: str, data: bytes, outcome: Outcome, deadline: float, killed: threading.Event
) -> None:
    chunks = split(data, CHUNK)
    session_id = f"crash-{uuid.uuid4().hex}"
    common = {"session_id": session_id, "total_chunks": str(len(chunks)), "chunk_size": str(CHUNK)}
    # one client per upload: building one per retry (an SSL context each) starves the restart of CPU
    client = httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=10)

    def step() -> bool:
        view = client.get(f"/v1/upload/video/session/{session_id}")
        missing = list(range(len(chunks)))
        if view.status_code != 404:
            state = view.json()["data"]
            if state["status"] == "completed":
                outcome.stored = state["content_hash"]
                return True
            missing = state["missing_chunks"]
            if not missing:  # assembling: the sweep finishes it after a crash
                time.sleep(0.2)
        for index in missing:
            if index == len(chunks) - 1:
                killed.wait(timeout=60)  # the last chunk only after the crash: every upload is in flight then
            response = client.post(
                "/v1/upload/video",
                data={**common, "chunk_index": str(index)},
                files={"file": ("crash.mp4", chunks[index], "video/mp4")},
            )
            if not outcome.answered(response, 200, f"chunk {index}"):
                return False
        return False

    with client:
        keep_trying(step, deadline)


def tus_upload(
    server: Server, key: str, data: bytes, outcome: Outcome, deadline: float, killed: threading.Event
) -> None:
    client = httpx.Client(headers={**TUS, "X-API-Key": key}, timeout=10)
    urls: list[str] = []

    def step() -> bool:
        if not urls:
            metadata = {"Upload-Length": str(len(data)), "Upload-Metadata": "filename Y3Jhc2gubXA0"}
            urls.append(client.post(f"{server.url}/v1/tus/", headers=metadata).headers["location"])
        state = client.head(urls[0])
        offset = int(state.headers["upload-offset"])
        if offset == len(data):
            if "vidgate-content-hash" in state.headers:
                outcome.stored = state.headers["vidgate-content-hash"]
                return True
            time.sleep(0.2)  # assembling
            return False
        if offset + CHUNK >= len(data):
            killed.wait(timeout=60)
        response = client.patch(
            urls[0],
            content=data[offset : offset + CHUNK],
            headers={"Content-Type": "application/offset+octet-stream", "Upload-Offset": str(offset)},
        )
        outcome.answered(response, 204, f"PATCH at {offset}")
        return False

    with client:
        keep_trying(step, deadline)


def test_kill_9_during_25_uploads_loses_nothing(server: Server, tmp_path: Path) -> None:
    seed_base = uuid.uuid4().int % 1_000_000
    settings = load_settings(server={"data_dir": server.data_dir})
    db = Database(settings.database_url)
    migrate.upgrade(db)
    key, _ = create_key(db, "crash")
    with ThreadPoolExecutor(2) as pool:  # PyAV encodes without holding the GIL
        paths = pool.map(lambda n: make_video(tmp_path / f"v{n}.mp4", frames=30, seed=n + seed_base), range(25))
        files = [path.read_bytes() for path in paths]
    outcomes = [Outcome(f"{'tus' if n >= 20 else 'chunked'} {n}", sha256(data)) for n, data in enumerate(files)]
    server.start()
    deadline = time.monotonic() + 120
    killed = threading.Event()
    threads = [
        threading.Thread(
            target=tus_upload if n >= 20 else chunked_upload, args=(server, key, data, outcomes[n], deadline, killed)
        )
        for n, data in enumerate(files)
    ]
    for thread in threads:
        thread.start()
    while sum(o.acknowledged > 0 for o in outcomes) < 25 and time.monotonic() < deadline:
        time.sleep(0.01)
    in_flight = sum(o.stored is None for o in outcomes)
    server.kill()
    killed.set()
    time.sleep(0.5)
    server.start()
    for thread in threads:
        thread.join(timeout=max(1.0, deadline - time.monotonic()))
    server.stop()

    assert in_flight == 25, "every upload was still going when the server died"
    for outcome in outcomes:
        assert outcome.stored == outcome.expected, (outcome.name, outcome.errors[-3:])

    services = build_services(settings)
    try:
        report = services.cleanup.run(now=utcnow() + timedelta(days=2), orphan_grace_seconds=0)
        with services.db.session() as session:
            chunk_rows = session.scalar(select(func.count()).select_from(UploadChunk))
    finally:
        services.close()
    storage = settings.storage_dir
    assert chunk_rows == 0, report
    assert list((storage / "parts").iterdir()) == []
    assert list((storage / "staging").iterdir()) == []
