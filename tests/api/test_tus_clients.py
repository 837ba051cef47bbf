"""Real tus clients against vidgate: tuspy (PyPI) with checksums, and resuming after the
uploading process was killed. (tus-js-client under Node is in tests/web.)"""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from pathlib import Path

from tusclient.client import TusClient

from tests.conftest import RunningServer
from tests.helpers import sha256
from tests.media import make_video

SCRIPT = Path(__file__).with_name("tuspy_upload.py")


def session_view(server: RunningServer, upload_url: str) -> dict[str, object]:
    with server.client() as client:
        response = client.get(f"/v1/upload/video/session/{upload_url.rstrip('/').rsplit('/', 1)[1]}")
    response.raise_for_status()
    data: dict[str, object] = response.json()["data"]
    return data


def test_tuspy_uploads_in_chunks_with_checksums(server: RunningServer, tmp_path: Path) -> None:
    path = make_video(tmp_path / "tuspy.mp4", frames=80, seed=uuid.uuid4().int % 100_000)
    client = TusClient(f"{server.base_url}/v1/tus/", headers={"X-API-Key": server.key_for("alice")})
    uploader = client.uploader(
        str(path), chunk_size=32 * 1024, metadata={"filename": "tuspy.mp4"}, upload_checksum=True
    )
    uploader.upload()
    view = session_view(server, uploader.url)
    assert view["status"] == "completed"
    assert view["content_hash"] == sha256(path.read_bytes())
    assert view["chunks_received"] == -(-path.stat().st_size // (32 * 1024))  # one chunk row per PATCH


def test_tuspy_resumes_after_its_process_is_killed(server: RunningServer, tmp_path: Path) -> None:
    path = make_video(tmp_path / "resume.mp4", frames=150, seed=uuid.uuid4().int % 100_000)
    size = path.stat().st_size
    state = tmp_path / "tus-urls.json"
    command = [
        sys.executable,
        str(SCRIPT),
        f"{server.base_url}/v1/tus/",
        server.key_for("alice"),
        str(path),
        str(state),
        str(16 * 1024),
        "0.05",
    ]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout is not None
        assert first.stdout.readline().split() == ["start", "0"]
        _, offset, url = first.stdout.readline().split()
        assert 0 < int(offset) < size
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    second = subprocess.run([*command[:-1], "0"], capture_output=True, text=True, timeout=60, check=True)
    lines = second.stdout.splitlines()
    resumed_at = int(lines[0].split()[1])
    assert int(offset) <= resumed_at < size  # the server's own record, at least what was acknowledged
    assert lines[-1] == f"done {url}"
    view = session_view(server, url)
    assert view["status"] == "completed"
    assert view["content_hash"] == sha256(path.read_bytes())
