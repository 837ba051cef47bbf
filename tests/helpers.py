"""Small client-side helpers the tests share."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

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
