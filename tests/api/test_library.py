"""The library over real HTTP, on SQLite and PostgreSQL: content with Range, reviews, listing,
pictures."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RunningServer
from tests.helpers import error_code, post_chunk, role_client, sha256, wait_until
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


# ------------------------------------------------------------------ reviews
def test_reviews_are_kept_with_who_when_and_what(server: RunningServer, tmp_path: Path) -> None:
    user = f"desk-{uuid.uuid4().hex[:6]}"
    path = make_video(tmp_path / "review-me.mp4", frames=10, seed=seed())
    with role_client(server, user, "uploader") as uploader:
        video_id = upload(uploader, path)
        refused = uploader.post(f"/v1/videos/{video_id}/review", json={"decision": "approved"})
        assert (refused.status_code, error_code(refused)) == (403, "insufficient_role")
        assert "reviewer or admin" in refused.json()["error"]["message"]
        assert uploader.get(f"/v1/videos/{video_id}/reviews").json()["data"] == {
            "video_id": video_id,
            "state": "unreviewed",
            "reviews": [],
        }
    with role_client(server, user, "viewer") as viewer:
        refused = viewer.post(f"/v1/videos/{video_id}/review", json={"decision": "approved"})
        assert refused.status_code == 403
    with role_client(server, user, "reviewer") as reviewer:
        first = reviewer.post(f"/v1/videos/{video_id}/review", json={"decision": "escalated", "note": " ask legal "})
        assert first.status_code == 200, first.text
        decided = first.json()["data"]
        assert decided["decision"] == "escalated" and decided["note"] == "ask legal"
        assert decided["key_role"] == "reviewer" and decided["key_label"] == "reviewer key" and decided["key_id"]
        second = reviewer.post(f"/v1/videos/{video_id}/review", json={"decision": "rejected"})
        assert second.status_code == 200
        history = reviewer.get(f"/v1/videos/{video_id}/reviews").json()["data"]
    assert history["state"] == "rejected"
    assert [r["decision"] for r in history["reviews"]] == ["rejected", "escalated"]
    assert history["reviews"][1]["created_at"] <= history["reviews"][0]["created_at"]


def test_review_input_is_checked(server: RunningServer, stored: tuple[str, bytes]) -> None:
    video_id, _ = stored
    with role_client(server, "alice", "admin") as admin:
        for body in ({"decision": "maybe"}, {}, {"decision": "approved", "extra": 1}):
            bad = admin.post(f"/v1/videos/{video_id}/review", json=body)
            assert (bad.status_code, error_code(bad)) == (400, "invalid_parameter"), body
        long_note = "x" * (server.settings.library.review_note_max_length + 1)
        too_long = admin.post(f"/v1/videos/{video_id}/review", json={"decision": "approved", "note": long_note})
        assert (too_long.status_code, error_code(too_long)) == (400, "invalid_parameter")
        assert "LIBRARY_REVIEW_NOTE_MAX_LENGTH" in too_long.json()["error"]["message"]
        missing = admin.post(f"/v1/videos/{uuid.uuid4()}/review", json={"decision": "approved"})
        assert (missing.status_code, error_code(missing)) == (404, "video_not_found")


def test_decisions_are_per_owner(server: RunningServer, stored: tuple[str, bytes], tmp_path: Path) -> None:
    video_id, data = stored
    copy = tmp_path / "same.mp4"
    copy.write_bytes(data)
    with server.client("bob") as bob:
        assert upload(bob, copy) == video_id
    with role_client(server, "alice", "reviewer") as alice_reviewer:
        assert alice_reviewer.post(f"/v1/videos/{video_id}/review", json={"decision": "approved"}).status_code == 200
    with server.client("bob") as bob:
        assert bob.get(f"/v1/videos/{video_id}/reviews").json()["data"]["reviews"] == []
    with role_client(server, f"other-{uuid.uuid4().hex[:6]}", "admin") as stranger:
        refused = stranger.post(f"/v1/videos/{video_id}/review", json={"decision": "rejected"})
        assert (refused.status_code, error_code(refused)) == (404, "video_not_found")


def test_a_decision_is_an_event_and_a_signed_webhook(server: RunningServer, tmp_path: Path) -> None:
    from tests.events.test_webhooks import Receiver
    from vidgate.events.webhooks import SIGNATURE_HEADER, set_webhook, verify

    user = f"hook-{uuid.uuid4().hex[:6]}"
    path = make_video(tmp_path / "hooked.mp4", frames=10, seed=seed())
    receiver = Receiver()
    try:
        with role_client(server, user, "admin") as admin:
            video_id = upload(admin, path)
            secret = set_webhook(server.db, user, receiver.url)
            response = admin.post(f"/v1/videos/{video_id}/review", json={"decision": "approved", "note": "fine"})
            assert response.status_code == 200
        wait_until(lambda: any(h["X-Vidgate-Event-Type"] == "video_reviewed" for h, _ in receiver.calls), 30)
        headers, body = next((h, b) for h, b in receiver.calls if h["X-Vidgate-Event-Type"] == "video_reviewed")
    finally:
        receiver.close()
    assert verify(secret, headers[SIGNATURE_HEADER], body)
    event = json.loads(body)
    assert event["video_id"] == video_id and "audience" not in event
    assert event["data"]["decision"] == "approved" and event["data"]["note"] == "fine"
    assert event["data"]["review_id"] == response.json()["data"]["review_id"]
