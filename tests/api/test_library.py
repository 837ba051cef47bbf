"""The library over real HTTP, on SQLite and PostgreSQL: content with Range, reviews, listing,
pictures."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RunningServer
from tests.helpers import error_code, post_chunk, role_client, sha256
from tests.media import make_video


def seed() -> int:
    return uuid.uuid4().int % 100_000


def upload(client: httpx.Client, path: Path, name: str | None = None) -> str:
    response = post_chunk(client, path.read_bytes(), filename=name or path.name, content_type="")
    assert response.status_code == 200, response.text
    return str(response.json()["data"]["video_id"])


@pytest.fixture
def stored(server: RunningServer, tmp_path: Path) -> tuple[str, bytes]:
    path = make_video(tmp_path / "seekable.mp4", frames=40, seed=seed())
    with server.client() as alice:
        return upload(alice, path), path.read_bytes()


# ------------------------------------------------------------------ content
def test_content_is_the_original_bytes_with_type_etag_and_ranges(
    server: RunningServer, stored: tuple[str, bytes]
) -> None:
    video_id, data = stored
    size = len(data)
    url = f"/v1/videos/{video_id}/content"
    with server.client() as alice:
        whole = alice.get(url)
        assert whole.status_code == 200 and whole.content == data
        assert whole.headers["content-type"] == "video/mp4"
        assert whole.headers["accept-ranges"] == "bytes"
        assert whole.headers["etag"] == f'"{sha256(data)}"'
        assert whole.headers["content-length"] == str(size)
        assert "seekable.mp4" in whole.headers["content-disposition"]
        first = alice.get(url, headers={"Range": "bytes=0-99"})
        assert first.status_code == 206 and first.content == data[:100]
        assert first.headers["content-range"] == f"bytes 0-99/{size}"
        tail = alice.get(url, headers={"Range": "bytes=-100"})
        assert tail.status_code == 206 and tail.content == data[-100:]
        rest = alice.get(url, headers={"Range": f"bytes={size - 10}-"})
        assert rest.content == data[-10:] and rest.headers["content-range"] == f"bytes {size - 10}-{size - 1}/{size}"
        beyond_end = alice.get(url, headers={"Range": f"bytes={size - 5}-{size + 1000}"})
        assert beyond_end.status_code == 206 and beyond_end.content == data[-5:]
        several = alice.get(url, headers={"Range": "bytes=0-9,20-29"})
        assert several.status_code == 206
        assert several.headers["content-type"].startswith("multipart/byteranges; boundary=")
        assert data[:10] in several.content and data[20:30] in several.content
        head = alice.head(url, headers={"Range": "bytes=0-9"})
        assert head.status_code == 206 and head.headers["content-length"] == "10" and head.content == b""


def test_bad_ranges_get_json_errors(server: RunningServer, stored: tuple[str, bytes]) -> None:
    video_id, data = stored
    url = f"/v1/videos/{video_id}/content"
    with server.client() as alice:
        past = alice.get(url, headers={"Range": f"bytes={len(data)}-"})
        assert (past.status_code, error_code(past)) == (416, "range_not_satisfiable")
        assert past.headers["content-range"] == f"bytes */{len(data)}"
        for header in ("bytes=abc", "bytes=9-2", "pages=0-1"):
            bad = alice.get(url, headers={"Range": header})
            assert (bad.status_code, error_code(bad)) == (400, "invalid_range"), header


def test_conditional_requests_use_the_sha256_etag(server: RunningServer, stored: tuple[str, bytes]) -> None:
    video_id, data = stored
    url = f"/v1/videos/{video_id}/content"
    etag = f'"{sha256(data)}"'
    with server.client() as alice:
        for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            cached = alice.get(url, headers={"If-None-Match": header})
            assert cached.status_code == 304 and cached.content == b"" and cached.headers["etag"] == etag
        assert alice.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
        same = alice.get(url, headers={"Range": "bytes=0-9", "If-Range": etag})
        assert same.status_code == 206 and same.content == data[:10]
        changed = alice.get(url, headers={"Range": "bytes=0-9", "If-Range": '"older"'})
        assert changed.status_code == 200 and changed.content == data


def test_content_is_only_for_its_owners_and_each_sees_their_own_name(
    server: RunningServer, stored: tuple[str, bytes], tmp_path: Path
) -> None:
    video_id, data = stored
    url = f"/v1/videos/{video_id}/content"
    with server.client("bob") as bob:
        refused = bob.get(url)
        assert (refused.status_code, error_code(refused)) == (404, "video_not_found")
        copy = tmp_path / "bobs-name.mp4"
        copy.write_bytes(data)
        assert upload(bob, copy) == video_id  # the same bytes: bob owns the content now too
        named = bob.get(url)
    assert named.status_code == 200 and "bobs-name.mp4" in named.headers["content-disposition"]
    assert "seekable" not in named.headers["content-disposition"]


def test_a_viewer_key_plays_its_accounts_videos(server: RunningServer, tmp_path: Path) -> None:
    user = f"team-{uuid.uuid4().hex[:6]}"
    path = make_video(tmp_path / "team.mkv", "mkv", frames=20, seed=seed())
    with role_client(server, user, "uploader") as uploader:
        video_id = upload(uploader, path)
    with role_client(server, user, "viewer") as viewer:
        response = viewer.get(f"/v1/videos/{video_id}/content", headers={"Range": "bytes=0-3"})
    assert response.status_code == 206 and response.content == path.read_bytes()[:4]
    assert response.headers["content-type"] == "video/x-matroska"


def test_a_store_without_local_files_streams_the_range_it_reads(
    server: RunningServer, stored: tuple[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path an S3-like BlobStore takes (local_path None): read_range, one range as 206."""
    video_id, data = stored
    blobs = server.services.processing.blobs
    reads: list[tuple[int, int]] = []
    read_range = blobs.read_range

    def recording(key: str, start: int, end: int, chunk_size: int = 256 * 1024) -> Any:
        reads.append((start, end))
        return read_range(key, start, end, chunk_size)

    monkeypatch.setattr(blobs, "local_path", lambda key: None)
    monkeypatch.setattr(blobs, "read_range", recording)
    url = f"/v1/videos/{video_id}/content"
    with server.client() as alice:
        part = alice.get(url, headers={"Range": "bytes=100-199"})
        whole = alice.get(url)
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    assert whole.status_code == 200 and whole.content == data
    assert reads == [(100, 200), (0, len(data))]
