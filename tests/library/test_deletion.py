"""Deleting videos over real HTTP, on SQLite and PostgreSQL: reference counting of the shared
content between owners, concurrent deletes, a delete racing an upload that dedups onto the same
bytes, crashes midway finished by the sweep, and a running analysis handed on."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from tests.conftest import RunningServer, database_url_for, make_settings, running_server
from tests.helpers import blob_path, error_code, post_chunk, role_client, sha256, wait_for_video, wait_until
from tests.media import make_video
from vidgate.db.models import AnalysisStatus, Content, UploadSession, Video, VideoReview, VideoStatus
from vidgate.library import deletion
from vidgate.library.deletion import VideoDeleter, deleter_for


@pytest.fixture(scope="module")
def lib_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server of this module's own (tests here patch its blob store)."""
    data_dir = tmp_path_factory.mktemp(f"deletion-{backend}")
    with database_url_for(backend, data_dir) as url, running_server(make_settings(data_dir, url)) as running:
        yield running


def clip(tmp_path: Path, name: str = "clip.mp4", frames: int = 12) -> Path:
    return make_video(tmp_path / f"{uuid.uuid4().hex[:6]}-{name}", frames=frames, seed=uuid.uuid4().int % 100_000)


def upload(client: httpx.Client, data: bytes, name: str = "clip.mp4") -> str:
    response = post_chunk(client, data, filename=name, content_type="")
    assert response.status_code == 200, response.text
    return str(response.json()["data"]["video_id"])


def user(server: RunningServer, role: str = "uploader") -> httpx.Client:
    return role_client(server, f"del-{uuid.uuid4().hex[:8]}", role)


def content_rows(server: RunningServer, digest: str) -> int:
    with server.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(Content).where(Content.content_hash == digest)))


def derived_dir(server: RunningServer, digest: str) -> Path:
    return server.settings.storage_dir / "derived" / digest[:2] / digest


def delete_together(barrier: threading.Barrier, client: httpx.Client, video_id: str) -> int:
    barrier.wait()
    return client.delete(f"/v1/videos/{video_id}").status_code


def upload_together(barrier: threading.Barrier, client: httpx.Client, data: bytes) -> str:
    barrier.wait()
    return upload(client, data, "his.mp4")


def test_the_bytes_stay_while_another_owner_holds_them(lib_server: RunningServer, tmp_path: Path) -> None:
    data = clip(tmp_path).read_bytes()
    digest = sha256(data)
    blob = blob_path(lib_server.settings.storage_dir, digest)
    with user(lib_server) as alice, user(lib_server) as bob:
        mine, his = upload(alice, data, "mine.mp4"), upload(bob, data, "his.mp4")
        wait_for_video(alice, mine), wait_for_video(bob, his)
        assert (derived_dir(lib_server, digest) / "poster.jpg").is_file()
        first = alice.delete(f"/v1/videos/{mine}")
        assert first.status_code == 200, first.text
        assert first.json()["data"] | {"deleted_at": None} == {
            "video_id": mine,
            "filename": "mine.mp4",
            "content_hash": digest,
            "deleted_at": None,
            "reason": "request",
        }
        assert (alice.get(f"/v1/videos/{mine}").status_code, error_code(alice.get(f"/v1/videos/{mine}"))) == (
            404,
            "video_not_found",
        )
        again = alice.delete(f"/v1/videos/{mine}")
        assert (again.status_code, error_code(again)) == (404, "video_not_found")
        # bob's video is untouched: content, pictures, result
        assert blob.is_file() and content_rows(lib_server, digest) == 1
        assert bob.get(f"/v1/videos/{his}/content").content == data
        assert bob.get(f"/v1/videos/{his}/poster.jpg").status_code == 200
        assert bob.get(f"/v1/videos/{his}/result").status_code == 200
        assert bob.delete(f"/v1/videos/{his}").status_code == 200
    assert not blob.exists() and content_rows(lib_server, digest) == 0
    assert not derived_dir(lib_server, digest).exists()
    assert not any(lib_server.settings.storage_dir.joinpath("withdrawn").iterdir())


def test_who_may_delete(lib_server: RunningServer, tmp_path: Path) -> None:
    name = f"team-{uuid.uuid4().hex[:6]}"
    data = clip(tmp_path).read_bytes()
    with role_client(lib_server, name, "uploader") as uploader:
        video_id = upload(uploader, data)
    for role in ("viewer", "reviewer"):
        with role_client(lib_server, name, role) as client:
            refused = client.delete(f"/v1/videos/{video_id}")
            assert (refused.status_code, error_code(refused)) == (403, "insufficient_role"), role
    with user(lib_server, "admin") as stranger:  # an admin of another account: not theirs
        refused = stranger.delete(f"/v1/videos/{video_id}")
        assert (refused.status_code, error_code(refused)) == (404, "video_not_found")
    with role_client(lib_server, name, "admin") as admin:
        second = upload(admin, clip(tmp_path).read_bytes())
        assert admin.delete(f"/v1/videos/{video_id}").status_code == 200  # the uploader key's video, same account
    with role_client(lib_server, name, "uploader") as uploader:
        assert uploader.delete(f"/v1/videos/{second}").status_code == 200


def test_reviews_and_session_links_go_with_the_video(lib_server: RunningServer, tmp_path: Path) -> None:
    with user(lib_server, "admin") as admin:
        response = post_chunk(admin, clip(tmp_path).read_bytes(), filename="x.mp4", content_type="")
        session_id, video_id = response.json()["data"]["session_id"], response.json()["data"]["video_id"]
        assert admin.post(f"/v1/videos/{video_id}/review", json={"decision": "rejected"}).status_code == 200
        assert admin.delete(f"/v1/videos/{video_id}").status_code == 200
        session = admin.get(f"/v1/upload/video/session/{session_id}")
        assert session.status_code == 200 and session.json()["data"]["video_id"] is None
    with lib_server.db.session() as session:
        reviews = select(func.count()).select_from(VideoReview).where(VideoReview.video_id == video_id)
        assert session.scalar(reviews) == 0


def test_two_owners_deleting_at_once_remove_the_bytes_exactly_once(lib_server: RunningServer, tmp_path: Path) -> None:
    for _ in range(4):
        data = clip(tmp_path, frames=6).read_bytes()
        digest = sha256(data)
        with user(lib_server) as alice, user(lib_server) as bob:
            ids = upload(alice, data), upload(bob, data)
            barrier = threading.Barrier(2)
            with ThreadPoolExecutor(2) as pool:
                statuses = list(pool.map(delete_together, (barrier, barrier), (alice, bob), ids))
        assert statuses == [200, 200]
        assert content_rows(lib_server, digest) == 0
        assert not blob_path(lib_server.settings.storage_dir, digest).exists()


def test_an_upload_kept_by_dedup_survives_the_last_owners_delete(
    lib_server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the withdraw protocol is for: bob's upload has moved its file into the store,
    which kept alice's identical blob and dropped bob's copy, and is about to link its video
    when alice (the last owner) deletes hers. Bob's video must still have its bytes."""
    data = clip(tmp_path).read_bytes()
    blobs = lib_server.services.blobs
    kept, go = threading.Event(), threading.Event()
    real_put = blobs.put_file

    def put_then_pause(content_hash: str, source: Path) -> str:
        existed = blobs.exists(content_hash)
        key = real_put(content_hash, source)
        if existed:
            kept.set()
            assert go.wait(30)
        return key

    with user(lib_server) as alice, user(lib_server) as bob:
        hers = upload(alice, data)
        wait_for_video(alice, hers)
        monkeypatch.setattr(blobs, "put_file", put_then_pause)
        with ThreadPoolExecutor(1) as pool:
            his_upload = pool.submit(upload, bob, data, "his.mp4")
            assert kept.wait(30)
            assert alice.delete(f"/v1/videos/{hers}").status_code == 200
            go.set()
            his = his_upload.result(timeout=30)
        monkeypatch.undo()
        assert bob.get(f"/v1/videos/{his}/content").content == data
        assert wait_for_video(bob, his)["status"] == "completed"
        assert bob.delete(f"/v1/videos/{his}").status_code == 200
    assert not blob_path(lib_server.settings.storage_dir, sha256(data)).exists()


def test_deletes_racing_uploads_of_the_same_bytes_never_lose_a_kept_video(
    lib_server: RunningServer, tmp_path: Path
) -> None:
    """Without pauses: the last owner deletes while another uploads the same bytes, many times."""
    for _ in range(6):
        data = clip(tmp_path, frames=6).read_bytes()
        with user(lib_server) as alice, user(lib_server) as bob:
            hers = upload(alice, data)
            barrier = threading.Barrier(2)
            with ThreadPoolExecutor(2) as pool:
                deleted = pool.submit(delete_together, barrier, alice, hers)
                uploaded = pool.submit(upload_together, barrier, bob, data)
                assert deleted.result(30) == 200
                his = uploaded.result(30)
            got = bob.get(f"/v1/videos/{his}/content")
            assert got.status_code == 200 and got.content == data
        assert content_rows(lib_server, sha256(data)) == 1


def test_a_deletion_is_an_event_and_a_signed_webhook(lib_server: RunningServer, tmp_path: Path) -> None:
    import json

    from tests.events.test_webhooks import Receiver
    from vidgate.events.webhooks import SIGNATURE_HEADER, set_webhook, verify

    name = f"hook-{uuid.uuid4().hex[:6]}"
    receiver = Receiver(fail_first=False)
    try:
        with role_client(lib_server, name, "uploader") as client:
            video_id = upload(client, clip(tmp_path).read_bytes(), "gone.mp4")
            secret = set_webhook(lib_server.db, name, receiver.url)
            assert client.delete(f"/v1/videos/{video_id}").status_code == 200
            wait_until(lambda: any(h["X-Vidgate-Event-Type"] == "video_deleted" for h, _ in receiver.calls), 30)
            headers, body = next((h, b) for h, b in receiver.calls if h["X-Vidgate-Event-Type"] == "video_deleted")
            replay = _replayed(lib_server, client, video_id)
    finally:
        receiver.close()
    assert verify(secret, headers[SIGNATURE_HEADER], body)
    event = json.loads(body)
    assert event["video_id"] == video_id and "audience" not in event
    assert event["data"]["reason"] == "request" and event["data"]["filename"] == "gone.mp4"
    assert event["data"]["key_id"] is not None
    assert "content_removed" not in event["data"]  # never tells whether another owner holds the bytes
    assert replay["event_id"] == event["event_id"]


def _replayed(server: RunningServer, client: httpx.Client, video_id: str) -> dict[str, Any]:
    """The stored video_deleted event, replayed over /ws (subscribed to all: a deleted video can
    no longer be subscribed to by its id)."""
    import json

    from websockets.sync.client import connect

    key = client.headers["X-API-Key"]
    with connect(f"{server.ws_url}?api_key={key}&subscribe=all&since=0") as ws:
        for _ in range(50):
            event = json.loads(ws.recv(timeout=10))
            if event["event_type"] == "video_deleted" and event["video_id"] == video_id:
                return dict(event)
    raise AssertionError("no video_deleted event replayed")


# ------------------------------------------------------------------ crashes midway
def test_a_delete_that_crashed_before_its_commit_is_undone_by_the_sweep(
    lib_server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = clip(tmp_path).read_bytes()
    digest = sha256(data)
    with user(lib_server) as alice:
        video_id = upload(alice, data)

        def crash(*_: Any) -> bool:
            raise RuntimeError("the process died here")

        monkeypatch.setattr(deletion, "_upload_in_flight", crash)  # after the blob was withdrawn
        with pytest.raises(RuntimeError):
            deleter_for(lib_server.services).delete(owner_of(lib_server, video_id), video_id)
        monkeypatch.undo()
        assert not blob_path(lib_server.settings.storage_dir, digest).exists()  # aside, as the crash left it
        assert alice.get(f"/v1/videos/{video_id}").status_code == 200  # the transaction rolled back
        report = deleter_for(lib_server.services).sweep(now=_later())
        assert report.restored_blobs == 1
        assert alice.get(f"/v1/videos/{video_id}/content").content == data


def test_a_delete_that_crashed_after_its_commit_is_finished_by_the_sweep(
    lib_server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = clip(tmp_path).read_bytes()
    digest = sha256(data)
    with user(lib_server) as alice:
        video_id = upload(alice, data)
        wait_for_video(alice, video_id)

        def crash(*_: Any) -> None:
            raise RuntimeError("the process died here")

        monkeypatch.setattr(VideoDeleter, "_after_commit", crash)
        with pytest.raises(RuntimeError):
            deleter_for(lib_server.services).delete(owner_of(lib_server, video_id), video_id)
        monkeypatch.undo()
        assert alice.get(f"/v1/videos/{video_id}").status_code == 404  # committed
        assert derived_dir(lib_server, digest).exists()
        report = deleter_for(lib_server.services).sweep(now=_later())
    assert report.purged_blobs == 1
    assert not derived_dir(lib_server, digest).exists()
    assert not (lib_server.settings.storage_dir / "withdrawn" / digest).exists()


def test_the_sweep_removes_a_content_no_video_took(lib_server: RunningServer, tmp_path: Path) -> None:
    """An upload past validation kept the content from a delete, then never linked its video."""
    data = clip(tmp_path).read_bytes()
    digest = sha256(data)
    with user(lib_server) as alice:
        response = post_chunk(alice, data, filename="x.mp4", content_type="")
        video_id, session_id = response.json()["data"]["video_id"], response.json()["data"]["session_id"]
        wait_for_video(alice, video_id)
        with lib_server.db.session() as session:  # as if this session were still assembling
            session.execute(
                update(UploadSession)
                .where(UploadSession.session_id == session_id)
                .values(status="assembling", video_id=None)
            )
        assert alice.delete(f"/v1/videos/{video_id}").status_code == 200
        assert content_rows(lib_server, digest) == 1  # kept for the upload in flight
        assert blob_path(lib_server.settings.storage_dir, digest).is_file()
        with lib_server.db.session() as session:
            session.execute(update(UploadSession).where(UploadSession.session_id == session_id).values(status="failed"))
        report = deleter_for(lib_server.services).sweep(now=_later())
    assert report.orphan_contents_removed == 1
    assert content_rows(lib_server, digest) == 0 and not blob_path(lib_server.settings.storage_dir, digest).exists()


# ------------------------------------------------------------------ pictures left behind
def leak_pictures(server: RunningServer, client: httpx.Client, data: bytes, tmp_path: Path) -> str:
    """A content whose pictures outlived it, as versions before pictures went in under the
    content's lock left them: its last owner deleted it, then its job put the pictures."""
    video_id = upload(client, data)
    wait_for_video(client, video_id)
    digest = sha256(data)
    made = {path.name: path.read_bytes() for path in derived_dir(server, digest).iterdir()}
    assert set(made) == {"poster.jpg", "storyboard.jpg", "storyboard.json"}
    assert client.delete(f"/v1/videos/{video_id}").status_code == 200
    assert content_rows(server, digest) == 0 and not derived_dir(server, digest).exists()
    for name, body in made.items():
        source = tmp_path / f"late-{name}"
        source.write_bytes(body)
        server.services.blobs.put_derived(digest, name, source)
    return digest


def test_the_sweep_removes_pictures_whose_content_is_gone_after_the_grace(
    lib_server: RunningServer, tmp_path: Path
) -> None:
    from datetime import timedelta

    from vidgate.db.models import utcnow

    with user(lib_server) as alice:
        gone = leak_pictures(lib_server, alice, clip(tmp_path).read_bytes(), tmp_path)
        kept = upload(alice, clip(tmp_path).read_bytes())
        wait_for_video(alice, kept)
        kept_digest = alice.get(f"/v1/videos/{kept}").json()["data"]["content_hash"]
    deleter = deleter_for(lib_server.services)
    grace = lib_server.settings.library.derived_grace_seconds
    assert deleter.derived_grace_seconds == grace > 0
    assert deleter.sweep().stray_pictures_removed == 0  # younger than LIBRARY_DERIVED_GRACE_SECONDS
    assert derived_dir(lib_server, gone).exists()
    report = deleter.sweep(now=utcnow() + timedelta(seconds=grace + 60))
    assert report.stray_pictures_removed >= 1
    assert not derived_dir(lib_server, gone).exists()
    assert {p.name for p in derived_dir(lib_server, kept_digest).iterdir()} == {
        "poster.jpg",
        "storyboard.jpg",
        "storyboard.json",
    }  # its content has a row: kept, however old
    assert deleter.sweep(now=utcnow() + timedelta(seconds=grace + 60)).stray_pictures_removed == 0


def test_stray_pictures_go_under_a_lock_that_an_upload_of_the_same_bytes_waits_for(
    lib_server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the sweep's look-up (no row) and the removal, an upload of the same bytes could
    make the row and its job put fresh pictures: the upload waits until the removal is over,
    and a content that has a row keeps its pictures."""
    from concurrent.futures import Future, wait

    data = clip(tmp_path).read_bytes()
    blobs = lib_server.services.blobs
    real_delete = blobs.delete_derived
    pool = ThreadPoolExecutor(1)
    again: list[Future[str]] = []
    finished_meanwhile: list[bool] = []
    with user(lib_server) as alice:
        digest = leak_pictures(lib_server, alice, data, tmp_path)

        def removing(content_hash: str) -> None:
            again.append(pool.submit(upload, alice, data))
            finished_meanwhile.append(bool(wait(again, timeout=4).done))
            real_delete(content_hash)

        monkeypatch.setattr(blobs, "delete_derived", removing)
        deleter = deleter_for(lib_server.services)
        assert deleter._remove_stray_pictures(digest)
        monkeypatch.undo()
        video_id = again[0].result(timeout=60)
        pool.shutdown()
        assert finished_meanwhile == [False]  # the upload waited for the removal
        assert wait_for_video(alice, video_id)["status"] == "completed"
        assert derived_dir(lib_server, digest).is_dir()  # its own job's pictures
        assert not deleter._remove_stray_pictures(digest)  # a row: they stay
        assert len(list(derived_dir(lib_server, digest).iterdir())) == 3
        assert alice.get(f"/v1/videos/{video_id}/poster.jpg").status_code == 200


def owner_of(server: RunningServer, video_id: str) -> str:
    with server.db.session() as session:
        return str(session.scalar(select(Video.user_id).where(Video.id == video_id)))


def _later() -> Any:
    from datetime import timedelta

    from vidgate.db.models import utcnow

    return utcnow() + timedelta(hours=1)


# ------------------------------------------------------------------ a running analysis
def test_deleting_the_analysing_video_hands_the_analysis_to_a_waiting_owner(
    lib_server: RunningServer, tmp_path: Path
) -> None:
    """Alice's job analyses the content; Bob's video waits for it (processing, no lease). Alice
    deletes hers: Bob's is queued, analyses and completes; Alice's job stores nothing."""
    data = clip(tmp_path).read_bytes()
    with user(lib_server) as alice, user(lib_server) as bob:
        hers, his = upload(alice, data), upload(bob, data)
        wait_for_video(alice, hers), wait_for_video(bob, his)
        with lib_server.db.session() as session:  # the state of a running analysis and a waiter
            content_id = session.scalar(select(Video.content_id).where(Video.id == hers))
            session.execute(
                update(Content)
                .where(Content.id == content_id)
                .values(status=AnalysisStatus.PROCESSING, analysing_video_id=hers)
            )
            session.execute(
                update(Video)
                .where(Video.id.in_([hers, his]))
                .values(status=VideoStatus.PROCESSING, lease_holder="elsewhere", lease_expires_at=None)
            )
        assert alice.delete(f"/v1/videos/{hers}").status_code == 200
        done = wait_for_video(bob, his)
        assert done["status"] == "completed"
        with lib_server.db.session() as session:
            content = session.get_one(Content, content_id)
            assert content.status is AnalysisStatus.COMPLETED and content.analysing_video_id is None
