"""tus 1.0.0 conformance over real HTTP: every status code and header of the core protocol and
of the extensions vidgate offers, plus what becomes of a finished upload (same sessions,
validation and dedup as the seed API)."""

from __future__ import annotations

import base64
import hashlib
import socket
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import delete, select, update

from tests.conftest import RunningServer, make_settings, running_server
from tests.helpers import error_code, sha256, wait_until
from tests.media import make_video
from vidgate.db.models import UploadSession, utcnow
from vidgate.uploads.locks import FileLocker, RedisLocker

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {"Content-Type": "application/offset+octet-stream"}


def metadata(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def video_bytes(tmp_path: Path, frames: int = 50) -> bytes:
    return make_video(tmp_path / f"{uuid.uuid4().hex}.mp4", frames=frames, seed=uuid.uuid4().int % 100_000).read_bytes()


def create(client: httpx.Client, length: int | None, name: str = "clip.mp4", **headers: str) -> str:
    sizing = {"Upload-Length": str(length)} if length is not None else {"Upload-Defer-Length": "1"}
    response = client.post("/v1/tus/", headers={**TUS, **sizing, "Upload-Metadata": metadata(filename=name), **headers})
    assert response.status_code == 201, response.text
    return response.headers["location"]


def patch(client: httpx.Client, url: str, offset: int, body: bytes, **headers: str) -> httpx.Response:
    return client.patch(url, content=body, headers={**TUS, **OCTETS, "Upload-Offset": str(offset), **headers})


def head(client: httpx.Client, url: str) -> httpx.Response:
    return client.head(url, headers=TUS)


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def test_options_announces_version_extensions_limits_and_checksums(server: RunningServer) -> None:
    with server.client() as client:
        response = client.options("/v1/tus/")
    assert response.status_code == 204
    assert response.headers["tus-resumable"] == "1.0.0"
    assert response.headers["tus-version"] == "1.0.0"
    extensions = set(response.headers["tus-extension"].split(","))
    assert extensions == {
        "creation",
        "creation-with-upload",
        "creation-defer-length",
        "expiration",
        "checksum",
        "termination",
        "concatenation",
    }
    assert int(response.headers["tus-max-size"]) == server.settings.upload.max_file_size
    assert set(response.headers["tus-checksum-algorithm"].split(",")) == {"sha1", "sha256", "md5"}


def test_a_request_without_the_protocol_version_gets_412(server: RunningServer) -> None:
    with server.client() as client:
        response = client.post("/v1/tus/", headers={"Upload-Length": "10"})
        wrong = client.post("/v1/tus/", headers={"Upload-Length": "10", "Tus-Resumable": "0.2.2"})
    for answer in (response, wrong):
        assert answer.status_code == 412
        assert answer.headers["tus-version"] == "1.0.0"
        assert error_code(answer) == "tus_version_unsupported"


def test_create_head_patch_until_complete(server: RunningServer, tmp_path: Path) -> None:
    data = video_bytes(tmp_path)
    with server.client() as client:
        url = create(client, len(data))
        assert url.startswith(server.base_url + "/v1/tus/")
        first = head(client, url)
        assert first.status_code == 200
        assert first.headers["upload-offset"] == "0"
        assert first.headers["upload-length"] == str(len(data))
        assert first.headers["upload-metadata"] == metadata(filename="clip.mp4")
        assert first.headers["cache-control"] == "no-store"
        assert "upload-expires" in first.headers
        half = len(data) // 2
        response = patch(client, url, 0, data[:half])
        assert response.status_code == 204
        assert response.headers["upload-offset"] == str(half)
        assert "upload-expires" in response.headers
        assert head(client, url).headers["upload-offset"] == str(half)
        done = patch(client, url, half, data[half:])
        assert done.status_code == 204, done.text
        assert done.headers["upload-offset"] == str(len(data))
        assert done.headers["vidgate-content-hash"] == sha256(data)
        assert done.headers["vidgate-duplicate"] == "false"
        session_id = url.rsplit("/", 1)[1]
        view = client.get(f"/v1/upload/video/session/{session_id}").json()["data"]
    assert view["status"] == "completed"
    assert view["content_hash"] == sha256(data)
    assert view["video_id"] == done.headers["vidgate-video-id"]
    assert view["progress_percentage"] == 100.0


def test_patch_errors_415_400_409_and_a_body_past_the_length(server: RunningServer, tmp_path: Path) -> None:
    data = video_bytes(tmp_path)
    with server.client() as client:
        url = create(client, len(data))
        wrong_type = client.patch(
            url, content=data[:10], headers={**TUS, "Upload-Offset": "0", "Content-Type": "application/json"}
        )
        assert wrong_type.status_code == 415
        assert error_code(wrong_type) == "invalid_content_type"
        no_offset = client.patch(url, content=data[:10], headers={**TUS, **OCTETS})
        assert no_offset.status_code == 400
        assert patch(client, url, 0, data[:1000]).status_code == 204
        mismatch = patch(client, url, 5, data[5:100])
        assert mismatch.status_code == 409
        assert error_code(mismatch) == "offset_mismatch"
        too_long = patch(client, url, 1000, data[1000:] + b"extra")
        assert too_long.status_code == 413
        assert head(client, url).headers["upload-offset"] == "1000"  # nothing of a refused body counts


def test_checksums_sha1_sha256_md5_and_460_on_mismatch(server: RunningServer, tmp_path: Path) -> None:
    data = video_bytes(tmp_path)
    third = len(data) // 3
    pieces = [data[:third], data[third : 2 * third], data[2 * third :]]
    with server.client() as client:
        url = create(client, len(data))
        bad = patch(client, url, 0, pieces[0], **{"Upload-Checksum": f"sha1 {b64(hashlib.sha1(b'other').digest())}"})
        assert bad.status_code == 460
        assert error_code(bad) == "checksum_mismatch"
        assert head(client, url).headers["upload-offset"] == "0"
        unknown = patch(client, url, 0, pieces[0], **{"Upload-Checksum": "crc32 AAAA"})
        assert unknown.status_code == 400
        offset = 0
        for piece, algorithm in zip(pieces, ("sha1", "sha256", "md5"), strict=True):
            digest = hashlib.new(algorithm, piece).digest()
            response = patch(client, url, offset, piece, **{"Upload-Checksum": f"{algorithm} {b64(digest)}"})
            assert response.status_code == 204, response.text
            offset += len(piece)
        assert response.headers["vidgate-content-hash"] == sha256(data)


def test_creation_with_upload_and_deferred_length(server: RunningServer, tmp_path: Path) -> None:
    data = video_bytes(tmp_path)
    with server.client() as client:
        created = client.post(
            "/v1/tus/",
            content=data[:4096],
            headers={
                **TUS,
                **OCTETS,
                "Upload-Defer-Length": "1",
                "Upload-Metadata": metadata(filename="later.mp4", filetype="video/mp4"),
            },
        )
        assert created.status_code == 201, created.text
        assert created.headers["upload-offset"] == "4096"
        url = created.headers["location"]
        state = head(client, url)
        assert state.headers["upload-defer-length"] == "1"
        assert "upload-length" not in state.headers
        done = patch(client, url, 4096, data[4096:], **{"Upload-Length": str(len(data))})
        assert done.status_code == 204, done.text
        assert done.headers["vidgate-content-hash"] == sha256(data)
        bad = client.post("/v1/tus/", headers={**TUS, "Upload-Defer-Length": "2"})
        assert bad.status_code == 400
        neither = client.post("/v1/tus/", headers=TUS)
        assert neither.status_code == 400


def test_limits_and_metadata_are_checked_like_the_seed_api(server: RunningServer) -> None:
    with server.client() as client:
        too_big = client.post(
            "/v1/tus/", headers={**TUS, "Upload-Length": str(server.settings.upload.max_file_size + 1)}
        )
        assert too_big.status_code == 413
        exe = client.post(
            "/v1/tus/", headers={**TUS, "Upload-Length": "100", "Upload-Metadata": metadata(filename="a.exe")}
        )
        assert exe.status_code == 415
        assert error_code(exe) == "extension_blocked"
        garbled = client.post("/v1/tus/", headers={**TUS, "Upload-Length": "100", "Upload-Metadata": "filename !!!"})
        assert garbled.status_code == 400
        priority = client.post(
            "/v1/tus/",
            headers={**TUS, "Upload-Length": "100", "Upload-Metadata": metadata(filename="a.mp4", priority="99")},
        )
        assert priority.status_code == 400


def test_refused_content_fails_the_upload_and_head_then_says_gone(server: RunningServer) -> None:
    fake = b"\x00" * 5000
    with server.client() as client:
        url = create(client, len(fake))
        refused = patch(client, url, 0, fake)
        assert refused.status_code == 415
        assert error_code(refused) == "unrecognized_format"
        assert head(client, url).status_code == 410


@pytest.mark.parametrize("filetype", ["video/matroska", "video/x-matroska", "application/octet-stream", ""])
def test_the_declared_filetype_of_a_matroska_file(server: RunningServer, tmp_path: Path, filetype: str) -> None:
    """Issue 13: Chromium's tus uploads of .mkv carry filetype video/matroska; it, the older
    video/x-matroska and a generic or empty filetype are accepted."""
    data = make_video(tmp_path / "clip.mkv", "mkv", seed=uuid.uuid4().int % 100_000).read_bytes()
    # A key without a value is written bare (tus 1.0: "filetype", not "filetype ").
    described = metadata(filename="clip.mkv") + (f",{metadata(filetype=filetype)}" if filetype else ",filetype")
    with server.client() as client:
        created = client.post(
            "/v1/tus/", headers={**TUS, "Upload-Length": str(len(data)), "Upload-Metadata": described}
        )
        assert created.status_code == 201, created.text
        done = patch(client, created.headers["location"], 0, data)
    assert done.status_code == 204, done.text
    assert done.headers["vidgate-content-hash"] == sha256(data)


def test_a_filetype_naming_another_container_is_refused_in_plain_words(server: RunningServer, tmp_path: Path) -> None:
    data = make_video(tmp_path / "clip.mkv", "mkv", seed=uuid.uuid4().int % 100_000).read_bytes()
    with server.client() as client:
        created = client.post(
            "/v1/tus/",
            headers={
                **TUS,
                "Upload-Length": str(len(data)),
                "Upload-Metadata": metadata(filename="clip.mkv", filetype="video/mp4"),
            },
        )
        refused = patch(client, created.headers["location"], 0, data)
    assert refused.status_code == 415
    assert refused.json()["error"] == {
        "code": "format_mismatch",
        "message": "The file is Matroska, but it was declared as video/mp4, a type for MP4 (ISO BMFF) or "
        "QuickTime MOV; send it as video/matroska or without a type.",
    }


def test_termination(server: RunningServer, tmp_path: Path) -> None:
    data = video_bytes(tmp_path)
    with server.client() as client:
        url = create(client, len(data))
        assert patch(client, url, 0, data[:5000]).status_code == 204
        upload_id = url.rsplit("/", 1)[1]
        assert client.delete(url, headers=TUS).status_code == 204
        assert head(client, url).status_code == 410
        assert patch(client, url, 5000, data[5000:]).status_code == 410
        view = client.get(f"/v1/upload/video/session/{upload_id}").json()["data"]
    assert view["status"] == "cancelled"
    # what had arrived before the termination (one PATCH of 5000 bytes), chunks and bytes alike
    assert (view["chunks_received"], view["bytes_received"], view["missing_chunks"]) == (1, 5000, [])
    assert view["progress_percentage"] == round(100 * 5000 / len(data), 2)
    assert not list((server.settings.storage_dir / "parts").glob("*.part")) or all(
        upload_id not in p.name for p in (server.settings.storage_dir / "parts").iterdir()
    )


def test_concatenation_of_partial_uploads(server: RunningServer, tmp_path: Path) -> None:
    data = video_bytes(tmp_path, frames=80)
    cut = len(data) // 3
    pieces = [data[:cut], data[cut:]]
    with server.client() as client:
        urls = []
        for piece in pieces:
            url = create(client, len(piece), **{"Upload-Concat": "partial"})
            assert head(client, url).headers["upload-concat"] == "partial"
            urls.append(url)
        assert patch(client, urls[1], 0, pieces[1]).status_code == 204  # parts finish in any order
        early = client.post(
            "/v1/tus/",
            headers={**TUS, "Upload-Concat": "final;" + " ".join(urls), "Upload-Metadata": metadata(filename="j.mp4")},
        )
        assert early.status_code == 400  # the first part is not complete yet
        assert patch(client, urls[0], 0, pieces[0]).status_code == 204
        final = client.post(
            "/v1/tus/",
            headers={
                **TUS,
                "Upload-Concat": "final;" + " ".join(urllib_path(u) for u in urls),
                "Upload-Metadata": metadata(filename="joined.mp4"),
            },
        )
        assert final.status_code == 201, final.text
        assert final.headers["vidgate-content-hash"] == sha256(data)
        final_url = final.headers["location"]
        state = head(client, final_url)
        assert state.headers["upload-offset"] == str(len(data))
        assert state.headers["upload-concat"].startswith("final;")
        assert patch(client, final_url, len(data), b"x").status_code == 403


def urllib_path(url: str) -> str:
    """The part as a path, not a full URL: the spec allows both."""
    return "/" + url.split("/", 3)[3]


def test_method_override_for_clients_limited_to_post(server: RunningServer, tmp_path: Path) -> None:
    data = video_bytes(tmp_path)
    with server.client() as client:
        url = create(client, len(data))
        response = client.post(
            url,
            content=data,
            headers={**TUS, **OCTETS, "Upload-Offset": "0", "X-HTTP-Method-Override": "PATCH"},
        )
        assert response.status_code == 204, response.text
        assert response.headers["upload-offset"] == str(len(data))


def test_unknown_other_users_and_expired_uploads(server: RunningServer, tmp_path: Path) -> None:
    data = video_bytes(tmp_path)
    with server.client("alice") as alice, server.client("bob") as bob:
        url = create(alice, len(data))
        assert head(alice, url + "nope").status_code == 404
        assert head(bob, url).status_code == 404
        assert patch(bob, url, 0, data).status_code == 404
        with server.db.session() as session:
            session.execute(
                update(UploadSession)
                .where(UploadSession.session_id == url.rsplit("/", 1)[1])
                .values(last_updated=utcnow() - timedelta(days=30))  # idle far past the timeout
            )
        assert head(alice, url).status_code == 410
        assert patch(alice, url, 0, data).status_code == 410
        with server.db.session() as session:
            session.execute(delete(UploadSession).where(UploadSession.session_id == url.rsplit("/", 1)[1]))
        assert patch(alice, url, 0, data).status_code == 410  # the server still knew its owner: gone
        assert head(alice, url).status_code == 404


def test_cors_lets_a_browser_on_another_origin_read_the_tus_headers(server: RunningServer, tmp_path: Path) -> None:
    with server.client() as client:
        preflight = client.options(
            "/v1/tus/",
            headers={
                "Origin": "http://elsewhere.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "tus-resumable,upload-length,upload-metadata,x-api-key",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] in ("*", "http://elsewhere.example")
        assert "PATCH" in preflight.headers["access-control-allow-methods"]
        url = create(client, 100, Origin="http://elsewhere.example")
        response = client.head(url, headers={**TUS, "Origin": "http://elsewhere.example"})
    exposed = {h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")}
    assert {"upload-offset", "upload-length", "location", "tus-resumable", "upload-expires"} <= exposed


def _start_patch_and_stall(server: RunningServer, url: str, offset: int, body: bytes, declared: int) -> socket.socket:
    """A PATCH whose body stops after ``body`` though ``declared`` bytes were announced."""
    host, port = server.base_url.removeprefix("http://").split(":")
    path = "/" + url.split("/", 3)[3]
    raw = socket.create_connection((host, int(port)))
    raw.sendall(
        (
            f"PATCH {path} HTTP/1.1\r\nHost: {host}\r\nTus-Resumable: 1.0.0\r\n"
            f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: {offset}\r\n"
            f"Content-Length: {declared}\r\nX-API-Key: {server.key_for('alice')}\r\n\r\n"
        ).encode()
        + body
    )
    return raw


def locked(server: RunningServer, url: str) -> bool:
    """Whether a request holds the upload's write lock, looked at without taking it (taking it,
    even for an instant, could turn the request away with 423)."""
    with server.db.session() as session:
        row_id = session.scalars(
            select(UploadSession.id).where(UploadSession.session_id == url.rsplit("/", 1)[1])
        ).one()
    locker = server.services.locker
    if isinstance(locker, RedisLocker):
        with redis.Redis.from_url(server.settings.celery.broker_url) as client:
            return bool(client.exists(f"vidgate:lock:{row_id}:tus"))
    assert isinstance(locker, FileLocker)
    return locker.is_held(row_id, "tus")


def test_a_patch_that_breaks_off_keeps_every_byte_that_arrived(server: RunningServer, tmp_path: Path) -> None:
    data = video_bytes(tmp_path, frames=120)
    sent = len(data) // 2 + 12345  # not a multiple of any block size
    with server.client() as client:
        url = create(client, len(data))
        raw = _start_patch_and_stall(server, url, 0, data[:sent], declared=len(data))
        wait_until(lambda: locked(server, url), timeout=5)  # the stalled PATCH is being written
        raw.close()
        wait_until(lambda: head(client, url).headers["upload-offset"] == str(sent), timeout=10)
        done = patch(client, url, sent, data[sent:])
        assert done.status_code == 204, done.text
    assert done.headers["vidgate-content-hash"] == sha256(data)


def test_concurrent_patches_are_serialised_with_423(server: RunningServer, tmp_path: Path) -> None:
    second_patch_waits_for_the_first(server, tmp_path)


def test_concurrent_patches_are_serialised_by_redis_locks_too(tmp_path: Path) -> None:
    """UPLOAD_LOCKS=redis: the lock lives in Redis, so API processes on several hosts agree."""
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", upload={"locks": "redis"})
    with running_server(settings) as server:
        assert isinstance(server.services.locker, RedisLocker)
        second_patch_waits_for_the_first(server, tmp_path)


def second_patch_waits_for_the_first(server: RunningServer, tmp_path: Path) -> None:
    data = video_bytes(tmp_path)
    with server.client() as client:
        url = create(client, len(data))
        raw = _start_patch_and_stall(server, url, 0, data[:1000], declared=len(data))
        try:
            wait_until(lambda: locked(server, url), timeout=5)
            refused = patch(client, url, 0, data)
            assert refused.status_code == 423
            assert error_code(refused) == "upload_locked"
            raw.sendall(data[1000:])
            raw.recv(4096)
        finally:
            raw.close()
        assert head(client, url).headers["upload-offset"] == str(len(data))


def test_expect_100_continue_is_answered_before_the_body(server: RunningServer, tmp_path: Path) -> None:
    """curl sends `Expect: 100-continue` for bodies over 1 MiB and waits for the interim answer;
    the server must send it (and not stall the client) once the request is accepted."""
    data = video_bytes(tmp_path)
    with server.client() as client:
        url = create(client, len(data))
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(
            (
                f"PATCH /{url.split('/', 3)[3]} HTTP/1.1\r\nHost: {host}\r\nTus-Resumable: 1.0.0\r\n"
                f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
                f"Content-Length: {len(data)}\r\nExpect: 100-continue\r\nX-API-Key: {server.key_for('alice')}\r\n\r\n"
            ).encode()
        )
        assert raw.recv(64).startswith(b"HTTP/1.1 100 Continue")
        raw.sendall(data)
        assert b"204 No Content" in raw.recv(4096)
