"""A full disk: the storage directory is a small tmpfs of the test's own. Chunks and tus
bodies that do not fit are refused with 507; the session stays resumable and, once there is
room again, completes with the right SHA-256. Nothing already acknowledged is touched."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RunningServer, make_settings, running_server
from tests.helpers import error_code, post_chunk, sha256, split
from tests.media import make_video

DISK_BYTES = 4 << 20
CHUNK = 256 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mountpoint = tmp_path / "storage"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


@pytest.fixture
def server_on_small_disk(tmp_path: Path, small_disk: Path) -> Iterator[RunningServer]:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", storage={"dir": small_disk})
    with running_server(settings) as server:
        yield server


@contextlib.contextmanager
def filled(disk: Path, leave: int) -> Iterator[None]:
    """Fill ``disk`` up to ``leave`` free bytes for the duration of the block."""
    filler = disk / "filler.bin"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with filler.open("wb") as handle:
        handle.write(b"\0" * max(0, free - leave))
    try:
        yield
    finally:
        filler.unlink()


def test_a_chunk_that_does_not_fit_gets_507_and_the_session_resumes(
    server_on_small_disk: RunningServer, small_disk: Path, tmp_path: Path
) -> None:
    data = make_video(tmp_path / "full.mp4", frames=120, seed=uuid.uuid4().int % 100_000).read_bytes()
    chunks = split(data, CHUNK)
    session_id = f"full-{uuid.uuid4().hex}"
    common = {"session_id": session_id, "total_chunks": len(chunks)}  # no file_size: nothing is reserved
    with server_on_small_disk.client() as client:
        first = post_chunk(client, chunks[0], chunk_index=0, **common)
        assert first.status_code == 200, first.text
        with filled(small_disk, leave=CHUNK // 2):
            refused = post_chunk(client, chunks[1], chunk_index=1, **common)
            assert refused.status_code == 507
            assert error_code(refused) == "insufficient_storage"
            view = client.get(f"/v1/upload/video/session/{session_id}").json()["data"]
            assert view["status"] == "active"
            assert view["missing_chunks"] == list(range(1, len(chunks)))
        for index in range(1, len(chunks)):
            response = post_chunk(client, chunks[index], chunk_index=index, **common)
            assert response.status_code == 200, response.text
    done = response.json()["data"]
    assert done["status"] == "completed"
    assert done["content_hash"] == sha256(data)


def test_a_session_that_announces_its_size_is_refused_before_any_byte_when_the_disk_is_full(
    server_on_small_disk: RunningServer, small_disk: Path, tmp_path: Path
) -> None:
    data = make_video(tmp_path / "reserve.mp4", frames=120, seed=uuid.uuid4().int % 100_000).read_bytes()
    chunks = split(data, CHUNK)
    common = {"session_id": f"res-{uuid.uuid4().hex}", "total_chunks": len(chunks), "file_size": len(data)}
    common["chunk_size"] = CHUNK
    with server_on_small_disk.client() as client:
        with filled(small_disk, leave=len(data) // 2):
            refused = post_chunk(client, chunks[0], chunk_index=0, **common)
            assert refused.status_code == 507  # the whole file's space is reserved up front
        for index, chunk in enumerate(chunks):
            response = post_chunk(client, chunk, chunk_index=index, **common)
            assert response.status_code == 200, response.text
    assert response.json()["data"]["content_hash"] == sha256(data)


def test_a_tus_patch_that_does_not_fit_gets_507_and_the_offset_stays(
    server_on_small_disk: RunningServer, small_disk: Path, tmp_path: Path
) -> None:
    data = make_video(tmp_path / "tus.mp4", frames=120, seed=uuid.uuid4().int % 100_000).read_bytes()
    tus = {"Tus-Resumable": "1.0.0"}
    body = {**tus, "Content-Type": "application/offset+octet-stream"}
    with server_on_small_disk.client() as client:
        created = client.post(
            "/v1/tus/", headers={**tus, "Upload-Defer-Length": "1", "Upload-Metadata": "filename YS5tcDQ="}
        )
        url = created.headers["location"]
        half = len(data) // 2
        assert client.patch(url, content=data[:half], headers={**body, "Upload-Offset": "0"}).status_code == 204
        with filled(small_disk, leave=64 * 1024):
            refused = client.patch(url, content=data[half:], headers={**body, "Upload-Offset": str(half)})
            assert refused.status_code == 507
            assert client.head(url, headers=tus).headers["upload-offset"] == str(half)
        done = client.patch(
            url, content=data[half:], headers={**body, "Upload-Offset": str(half), "Upload-Length": str(len(data))}
        )
        assert done.status_code == 204, done.text
    assert done.headers["vidgate-content-hash"] == sha256(data)
