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
        bobs = upload(bob, copy)  # the same bytes: bob has a video of his own over the same content
        assert bobs != video_id
        still_refused = bob.get(url)
        named = bob.get(f"/v1/videos/{bobs}/content")
    assert (still_refused.status_code, error_code(still_refused)) == (404, "video_not_found")
    assert named.status_code == 200 and named.content == data
    assert "bobs-name.mp4" in named.headers["content-disposition"]
    assert "seekable" not in named.headers["content-disposition"]


def test_content_is_served_without_a_thread_hop_on_sqlite_and_never_once_deleted(
    server: RunningServer, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a cached key (or a signed URL) on SQLite, the ownership check, the open and the
    reads stay on the event loop; on PostgreSQL one hop does them all. Each request reads the
    database: the next request after a delete is refused."""
    from vidgate.api import library

    path = make_video(tmp_path / "hop.mp4", frames=10, seed=seed())
    data = path.read_bytes()
    hops: list[str] = []
    real = library.run_in_threadpool

    async def counting(function: Any, *args: Any) -> Any:
        hops.append(getattr(function, "__name__", repr(function)))
        return await real(function, *args)

    with server.client() as alice:
        video_id = upload(alice, path)
        signed = alice.get(f"/v1/videos/{video_id}/urls").json()["data"]["content"]
        url = f"/v1/videos/{video_id}/content"
        assert alice.get(url, headers={"Range": "bytes=0-9"}).status_code == 206  # the key is cached now
        monkeypatch.setattr(library, "run_in_threadpool", counting)
        for headers in ({"Range": "bytes=10-19"}, {}):
            answer = alice.get(url, headers=headers)
            assert answer.status_code in (200, 206) and answer.content in (data[10:20], data)
        with httpx.Client(base_url=server.base_url, timeout=30) as browser:
            assert browser.get(signed, headers={"Range": "bytes=0-3"}).content == data[:4]
        assert hops == ([] if backend == "sqlite" else ["_authorised_and_opened"] * 3)
        assert alice.delete(f"/v1/videos/{video_id}").status_code == 200
        gone = alice.get(url)
        assert (gone.status_code, error_code(gone)) == (404, "video_not_found")
        with httpx.Client(base_url=server.base_url, timeout=30) as browser:
            refused = browser.get(signed)
        assert (refused.status_code, error_code(refused)) == (403, "invalid_url_signature")


def test_content_checks_its_query_and_headers_as_declared(server: RunningServer, stored: tuple[str, bytes]) -> None:
    video_id, _ = stored
    url = f"/v1/videos/{video_id}/content"
    with httpx.Client(base_url=server.base_url, timeout=30) as browser:
        for query in ("exp=soon&sig=abc", f"exp=1&sig={'a' * 129}"):
            bad = browser.get(f"{url}?{query}")
            assert (bad.status_code, error_code(bad)) == (400, "invalid_parameter"), query
        half = browser.get(f"{url}?sig=abc")
        assert (half.status_code, error_code(half)) == (403, "invalid_url_signature")
        key = server.keys["alice"]
        for headers in (
            {"Authorization": "Basic abc", "X-API-Key": key},
            {"Authorization": f"Bearer {key}", "X-API-Key": "vg_x"},
        ):
            refused = browser.get(url, headers=headers)
            assert (refused.status_code, error_code(refused)) == (401, "unauthenticated"), headers
        assert browser.get(url, headers={"Authorization": f"Bearer {key}", "Range": "bytes=0-0"}).status_code == 206
    schema = httpx.get(f"{server.base_url}/openapi.json").json()
    operation = schema["paths"]["/v1/videos/{video_id}/content"]["get"]
    assert {p["name"] for p in operation["parameters"]} == {"video_id", "exp", "sig"}
    assert set(operation["responses"]) >= {"200", "206", "304", "400", "401", "403", "404"}
    assert "head" not in schema["paths"]["/v1/videos/{video_id}/content"]


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
        bobs = upload(bob, copy)
    with role_client(server, "alice", "reviewer") as alice_reviewer:
        assert alice_reviewer.post(f"/v1/videos/{video_id}/review", json={"decision": "approved"}).status_code == 200
        refused_bobs = alice_reviewer.post(f"/v1/videos/{bobs}/review", json={"decision": "approved"})
        assert (refused_bobs.status_code, error_code(refused_bobs)) == (404, "video_not_found")
    with server.client("bob") as bob:
        assert bob.get(f"/v1/videos/{bobs}/reviews").json()["data"]["reviews"] == []
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


# ------------------------------------------------------------------ listing
def fresh_user(server: RunningServer, role: str = "admin") -> httpx.Client:
    return role_client(server, f"lib-{uuid.uuid4().hex[:8]}", role)


def upload_named(client: httpx.Client, tmp_path: Path, names: list[str]) -> list[str]:
    """Upload one distinct small video per name, oldest first; returns their ids in that order."""
    ids = []
    for name in names:
        path = make_video(tmp_path / f"{uuid.uuid4().hex}.mp4", frames=5, seed=seed())
        ids.append(upload(client, path, name))
    return ids


def all_pages(client: httpx.Client, **params: Any) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        response = client.get("/v1/videos", params={**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        pages.append([item["video_id"] for item in data["items"]])
        cursor = data["next_cursor"]
        if cursor is None:
            return pages


def test_listing_is_newest_first_in_pages_stable_under_inserts(server: RunningServer, tmp_path: Path) -> None:
    with fresh_user(server) as client:
        ids = upload_named(client, tmp_path, [f"clip{i}.mp4" for i in range(5)])
        newest_first = ids[::-1]
        assert all_pages(client, limit=2) == [newest_first[:2], newest_first[2:4], newest_first[4:]]
        first = client.get("/v1/videos", params={"limit": 2}).json()["data"]
        assert [i["video_id"] for i in first["items"]] == newest_first[:2]
        (late,) = upload_named(client, tmp_path, ["late.mp4"])  # arrives between page 1 and page 2
        rest, cursor = [], first["next_cursor"]
        while cursor:
            data = client.get("/v1/videos", params={"limit": 2, "cursor": cursor}).json()["data"]
            rest += [i["video_id"] for i in data["items"]]
            cursor = data["next_cursor"]
        assert rest == newest_first[2:]  # no repeat, no gap, the newcomer not in the middle
        assert client.get("/v1/videos").json()["data"]["items"][0]["video_id"] == late
        item = client.get("/v1/videos", params={"limit": 1}).json()["data"]["items"][0]
    assert item["filename"] == "late.mp4" and item["container"] == "mp4" and item["review_state"] == "unreviewed"
    assert item["content_url"] == f"/v1/videos/{late}/content"


def test_listing_shows_only_the_callers_videos_under_their_own_names(
    server: RunningServer, stored: tuple[str, bytes], tmp_path: Path
) -> None:
    video_id, data = stored
    with fresh_user(server) as client:
        assert client.get("/v1/videos").json()["data"] == {"items": [], "next_cursor": None}
        copy = tmp_path / "mine.mp4"
        copy.write_bytes(data)
        mine = upload(client, copy)
        assert mine != video_id  # their own video of the same bytes, never the other owner's id
        assert upload(client, copy) == mine  # the same content twice: still one entry
        items = client.get("/v1/videos").json()["data"]["items"]
    assert [(i["video_id"], i["filename"]) for i in items] == [(mine, "mine.mp4")]


def test_listing_filters(server: RunningServer, tmp_path: Path) -> None:
    with fresh_user(server) as client:
        names = ["50%_off.mp4", "50xxoff.mp4", "Holiday.MP4", "holiday-2.mp4", "other.mp4"]
        ids = dict(zip(names, upload_named(client, tmp_path, names), strict=True))
        for video_id in ids.values():
            wait_for(client, video_id)

        def listed(**params: Any) -> set[str]:
            return {i for page in all_pages(client, **params) for i in page}

        assert listed(filename="%_") == {ids["50%_off.mp4"]}  # wildcards are literal
        assert listed(filename="HOLIDAY") == {ids["Holiday.MP4"], ids["holiday-2.mp4"]}  # any case
        assert listed(filename="nothing-like-it") == set()
        assert listed(status="completed") == set(ids.values())
        assert listed(status="failed") == set()
        client.post(f"/v1/videos/{ids['other.mp4']}/review", json={"decision": "approved"})
        client.post(f"/v1/videos/{ids['Holiday.MP4']}/review", json={"decision": "escalated"})
        client.post(f"/v1/videos/{ids['Holiday.MP4']}/review", json={"decision": "rejected"})
        assert listed(review="approved") == {ids["other.mp4"]}
        assert listed(review="rejected") == {ids["Holiday.MP4"]}
        assert listed(review="escalated") == set()  # the latest decision counts
        assert listed(review="unreviewed") == {ids[n] for n in names[:2]} | {ids["holiday-2.mp4"]}
        items = {i["video_id"]: i for i in client.get("/v1/videos").json()["data"]["items"]}
        assert items[ids["Holiday.MP4"]]["review_state"] == "rejected"
        digest = items[ids["other.mp4"]]["content_hash"]
        assert listed(content_hash=digest) == {ids["other.mp4"]}
        middle = items[ids["Holiday.MP4"]]["created_at"]
        assert listed(created_after=middle) == {ids[n] for n in names[2:]}
        assert listed(created_before=middle) == {ids[n] for n in names[:2]}
        assert listed(created_after=middle, created_before=middle) == set()
        assert listed(status="completed", review="unreviewed", filename="50") == {ids[n] for n in names[:2]}
        client.post(f"/v1/videos/{ids['50xxoff.mp4']}/review", json={"decision": "approved"})
        assert all_pages(client, review="approved", limit=1) == [[ids["other.mp4"]], [ids["50xxoff.mp4"]]]
        assert all_pages(client, review="unreviewed", limit=1) == [[ids["holiday-2.mp4"]], [ids["50%_off.mp4"]]]


def test_the_file_name_filter_keeps_up_with_uploads_and_deletes_and_owners(
    server: RunningServer, tmp_path: Path
) -> None:
    """The trigram index behind ``filename`` (SQLite: a table kept by triggers on ``video``)
    finds what was just uploaded, forgets what was deleted, and never another owner's video."""
    with fresh_user(server) as alice, fresh_user(server) as bob:
        hers = dict(
            zip(
                ["Rare-NEEDLE-1.mp4", "needle 2.mp4", "hay.mp4"],
                upload_named(alice, tmp_path, ["Rare-NEEDLE-1.mp4", "needle 2.mp4", "hay.mp4"]),
                strict=True,
            )
        )
        (his,) = upload_named(bob, tmp_path, ["needle-of-bob.mp4"])
        assert {i for page in all_pages(alice, filename="needle") for i in page} == {
            hers["Rare-NEEDLE-1.mp4"],
            hers["needle 2.mp4"],
        }
        assert {i for page in all_pages(alice, filename="e-1") for i in page} == {hers["Rare-NEEDLE-1.mp4"]}
        assert {i for page in all_pages(alice, filename="ne") for i in page} == {
            hers["Rare-NEEDLE-1.mp4"],
            hers["needle 2.mp4"],
        }
        wait_for(alice, hers["needle 2.mp4"])
        assert alice.delete(f"/v1/videos/{hers['needle 2.mp4']}").status_code == 200
        assert {i for page in all_pages(alice, filename="needle") for i in page} == {hers["Rare-NEEDLE-1.mp4"]}
        assert {i for page in all_pages(bob, filename="needle") for i in page} == {his}


def wait_for(client: httpx.Client, video_id: str) -> None:
    from tests.helpers import wait_for_video

    assert wait_for_video(client, video_id)["status"] == "completed"


def test_listing_refuses_bad_parameters(server: RunningServer) -> None:
    maximum = server.settings.library.max_page_size
    with server.client() as client:
        for params, code in (
            ({"limit": 0}, "invalid_parameter"),
            ({"limit": maximum + 1}, "invalid_parameter"),
            ({"cursor": "not-a-cursor"}, "invalid_cursor"),
            ({"cursor": "WyJ4Il0"}, "invalid_cursor"),  # base64 of ["x"]
            ({"status": "lost"}, "invalid_parameter"),
            ({"review": "maybe"}, "invalid_parameter"),
            ({"content_hash": "ABC"}, "invalid_parameter"),
            ({"created_after": "2026-01-01T00:00:00"}, "invalid_parameter"),  # no time zone
            ({"created_after": "yesterday"}, "invalid_parameter"),
        ):
            response = client.get("/v1/videos", params=params)
            assert (response.status_code, error_code(response)) == (400, code), params
        assert client.get("/v1/videos", params={"limit": maximum}).status_code == 200


# ------------------------------------------------------------------ pictures
def test_processing_makes_a_poster_and_a_storyboard(server: RunningServer, tmp_path: Path) -> None:
    import av
    import numpy as np

    from tests.helpers import wait_for_video
    from tests.media import make_scene_video

    path = make_scene_video(tmp_path / "scenes.mp4", seconds=6, width=320, height=180, seed=seed())
    with server.client() as alice:
        video_id = upload(alice, path)
        early = alice.get(f"/v1/videos/{video_id}/poster.jpg")
        if early.status_code != 200:  # not processed yet
            assert (early.status_code, error_code(early)) == (409, "picture_not_ready")
        assert wait_for_video(alice, video_id)["status"] == "completed"
        poster = alice.get(f"/v1/videos/{video_id}/poster.jpg")
        sprite = alice.get(f"/v1/videos/{video_id}/storyboard.jpg")
        index = alice.get(f"/v1/videos/{video_id}/storyboard.json").json()
        stages = {s["name"] for s in alice.get(f"/v1/videos/{video_id}/result").json()["data"]["stages"]}
    assert "pictures" in stages
    assert poster.status_code == sprite.status_code == 200
    assert poster.headers["content-type"] == sprite.headers["content-type"] == "image/jpeg"
    (tmp_path / "poster.jpg").write_bytes(poster.content)
    (tmp_path / "sprite.jpg").write_bytes(sprite.content)
    with av.open(str(tmp_path / "poster.jpg")) as container:
        picture = next(container.decode(video=0)).to_ndarray(format="rgb24")
    library = server.settings.library
    assert picture.shape == (library.poster_width * 180 // 320, library.poster_width, 3)
    assert float(np.std(picture)) > 5  # a real frame, not a blank
    width = library.storyboard_tile_width
    assert index["url"] == f"/v1/videos/{video_id}/storyboard.jpg"
    assert (index["tile_width"], index["tile_height"]) == (width, width * 180 // 320)
    starts = [t["start"] for t in index["tiles"]]
    assert starts == sorted(starts) and starts[0] == 0.0 and len(starts) >= 6
    assert index["duration"] == pytest.approx(6.0, abs=0.1)
    with av.open(str(tmp_path / "sprite.jpg")) as container:
        board = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert board.shape == (index["rows"] * index["tile_height"], index["columns"] * index["tile_width"], 3)
    # The pictures belong to the bytes: bob, who sends the same file, gets the same ones; a stranger none.
    with server.client("bob") as bob:
        refused = bob.get(f"/v1/videos/{video_id}/storyboard.json")
        assert (refused.status_code, error_code(refused)) == (404, "video_not_found")
        bobs = upload(bob, path, "bobs.mp4")
        assert bobs != video_id
        wait_for(bob, bobs)
        assert bob.get(f"/v1/videos/{bobs}/poster.jpg").content == poster.content


# ------------------------------------------------------------------ signed URLs
def test_signed_urls_play_and_show_without_a_key_with_ranges(server: RunningServer, tmp_path: Path) -> None:
    from tests.helpers import wait_for_video

    path = make_video(tmp_path / "signed.mp4", frames=30, seed=seed())
    data = path.read_bytes()
    with server.client() as alice:
        video_id = upload(alice, path)
        wait_for_video(alice, video_id)
        items = alice.get("/v1/videos", params={"content_hash": sha256(data)}).json()["data"]["items"]
        urls = alice.get(f"/v1/videos/{video_id}/urls").json()["data"]
    listed = items[0]["urls"]
    assert set(listed) == {"content", "poster", "storyboard", "storyboard_index", "expires_at"}
    with httpx.Client(base_url=server.base_url, timeout=30) as browser:  # no key, as a <video> element
        for signed in (listed, urls):
            whole = browser.get(signed["content"])
            assert whole.status_code == 200 and whole.content == data
            assert whole.headers["content-type"] == "video/mp4"
            part = browser.get(signed["content"], headers={"Range": "bytes=100-199"})
            assert part.status_code == 206 and part.content == data[100:200]
            assert browser.get(signed["poster"]).headers["content-type"] == "image/jpeg"
            assert browser.get(signed["storyboard"]).status_code == 200
            index = browser.get(signed["storyboard_index"]).json()
            sprite = browser.get(index["url"])  # signed the same way: an <img> can show it
            assert sprite.status_code == 200 and sprite.headers["content-type"] == "image/jpeg"
        unsigned = browser.get(f"/v1/videos/{video_id}/content")
        assert (unsigned.status_code, error_code(unsigned)) == (401, "unauthenticated")
        query = listed["content"].split("?", 1)[1]
        exp = int(query.split("exp=")[1].split("&")[0])
        for bad in (
            listed["content"].replace(f"exp={exp}", f"exp={exp + 60}"),
            listed["content"][:-2] + ("AA" if not listed["content"].endswith("AA") else "BB"),
            listed["content"].split("&sig=")[0],
        ):
            refused = browser.get(bad)
            assert (refused.status_code, error_code(refused)) == (403, "invalid_url_signature"), bad
        # the signature opens this video only: another video id with it fails the same way
        with server.client("bob") as bob:
            bobs = upload(bob, make_video(tmp_path / "b.mp4", frames=5, seed=seed()))
        other = browser.get(f"/v1/videos/{bobs}/content?{query}")
        assert (other.status_code, error_code(other)) == (403, "invalid_url_signature")
        unknown = browser.get(f"/v1/videos/{uuid.uuid4()}/content?{query}")
        assert (unknown.status_code, error_code(unknown)) == (403, "invalid_url_signature")
        # a signed URL reads; it never lists, reviews or deletes
        assert browser.get(f"/v1/videos?{query}").status_code == 401
        assert browser.delete(f"/v1/videos/{video_id}?{query}").status_code == 401


def test_an_expired_signed_url_is_refused(server: RunningServer, stored: tuple[str, bytes]) -> None:
    from vidgate.library.signing import UrlSigner

    video_id, _ = stored
    with server.db.session() as session:
        from sqlalchemy import select

        from vidgate.db.models import Video

        owner = session.scalar(select(Video.user_id).where(Video.id == video_id))
    signer = UrlSigner.from_settings(server.settings.library)  # this process's secret, as the server's
    stale = signer.urls(video_id, str(owner), now=0).content
    with httpx.Client(base_url=server.base_url, timeout=30) as browser:
        refused = browser.get(stale)
    assert (refused.status_code, error_code(refused)) == (403, "url_expired")


def test_urls_are_only_for_the_owner(server: RunningServer, stored: tuple[str, bytes]) -> None:
    video_id, _ = stored
    with server.client("bob") as bob:
        refused = bob.get(f"/v1/videos/{video_id}/urls")
    assert (refused.status_code, error_code(refused)) == (404, "video_not_found")


def test_stored_file_response_serves_whole_files_ranges_and_head_in_bounded_reads(tmp_path: Path) -> None:
    """The content route's response on its own: bodies of several reads (each at most
    SERVE_CHUNK), a range across a read boundary, HEAD, and every descriptor closed."""
    import asyncio
    import os

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.routing import Route

    from vidgate.api.library import SERVE_CHUNK, StoredFileResponse, read_cached

    data = os.urandom(SERVE_CHUNK * 2 + 12_345)
    path = tmp_path / "blob"
    path.write_bytes(data)
    sizes: list[int] = []

    async def serve(request: Request) -> StoredFileResponse:
        start, end = int(request.query_params.get("start", 0)), request.query_params.get("end")
        byte_range = (start, int(end)) if end is not None else None
        return StoredFileResponse(
            os.open(path, os.O_RDONLY), len(data), byte_range, "video/mp4", {"ETag": '"x"'}, request.method == "HEAD"
        )

    app = Starlette(routes=[Route("/f", serve, methods=["GET", "HEAD"])])

    async def recording(scope: Any, receive: Any, send: Any) -> None:  # the sizes of the body messages
        async def spy(message: Any) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                sizes.append(len(message["body"]))
            await send(message)

        await app(scope, receive, spy)

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=recording)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return [
                await client.get("/f"),
                await client.get("/f", params={"start": SERVE_CHUNK - 10, "end": SERVE_CHUNK + 10}),
                await client.head("/f"),
            ]

    descriptors = len(list(Path("/proc/self/fd").iterdir()))
    whole, across, head = asyncio.run(run())
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-length"] == str(len(data)) and whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-type"] == "video/mp4" and whole.headers["etag"] == '"x"'
    assert across.status_code == 206 and across.content == data[SERVE_CHUNK - 10 : SERVE_CHUNK + 10]
    assert across.headers["content-range"] == f"bytes {SERVE_CHUNK - 10}-{SERVE_CHUNK + 9}/{len(data)}"
    assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == str(len(data))
    assert len(list(Path("/proc/self/fd").iterdir())) == descriptors  # each response closed its descriptor
    assert max(sizes) <= SERVE_CHUNK and sum(sizes) == len(data) + 20  # bounded reads; HEAD sent no body
    with path.open("rb") as file:  # the bytes are in the page cache now: read without a thread
        chunk = read_cached(file.fileno(), 100, len(data) - 40)
    assert chunk is None or bytes(chunk) == data[-40:]


# ------------------------------------------------------------------ Range parsing
def test_the_one_range_fast_path_agrees_with_starlettes_parser() -> None:
    """parse_range reads a player's ``bytes=N-[M]`` itself: every answer (and every refusal)
    must be the one Starlette's general parser gives."""
    import random

    from starlette.responses import FileResponse

    from vidgate.api.library import parse_range
    from vidgate.errors import VidgateError

    def starlette(header: str, size: int) -> Any:
        try:
            return FileResponse._parse_range_header(header, size)
        except Exception as exc:
            return type(exc).__name__

    def ours(header: str, size: int) -> Any:
        try:
            return parse_range(header, size)
        except VidgateError as exc:
            return {"invalid_range": "MalformedRangeHeader", "range_not_satisfiable": "RangeNotSatisfiable"}[exc.code]

    rng = random.Random(5)
    size = 1000
    headers = ["bytes=0-", "bytes=0-0", "bytes=999-", "bytes=1000-", "bytes=5-4", "bytes=0-5000", " bytes=3-9 "]
    headers += ["bytes=-5", "bytes=1-2,4-5", "bytes=", "bytes=a-b", "items=0-1", f"bytes={'9' * 25}-"]
    for _ in range(400):
        a, b = rng.randrange(0, 1200), rng.randrange(0, 1200)
        headers.append(f"bytes={a}-{b if rng.random() < 0.7 else ''}")
    for header in headers:
        assert ours(header, size) == starlette(header, size), header
