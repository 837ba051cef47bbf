"""The seed upload API over real HTTP, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import random
import shutil
import socket
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.conftest import RunningServer
from tests.helpers import UPLOAD, blob_path, error_code, post_chunk, sha256, split, upload_chunks
from tests.media import make_video
from vidgate.db.models import UploadChunk, UploadProgressLog, UploadSession

CHUNK = 64 * 1024


def new_session_id() -> str:
    return f"test-{uuid.uuid4().hex}"


def part_files(server: RunningServer) -> list[Path]:
    return list((server.settings.storage_dir / "parts").glob("*.part"))


def test_single_upload_stores_the_file_intact(server: RunningServer, unique_video: Path) -> None:
    data = unique_video.read_bytes()
    with server.client() as client:
        response = post_chunk(client, data, priority=7, options='{"model_type": "resnet50"}')
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    receipt = body["data"]
    assert receipt["status"] == "completed"
    assert receipt["content_hash"] == sha256(data)
    assert receipt["file_size"] == len(data)
    assert receipt["priority"] == 7
    assert receipt["video_id"]
    assert receipt["upload_id"] == receipt["session_id"]
    stored = blob_path(server.settings.storage_dir, sha256(data))
    assert stored.read_bytes() == data
    with server.client() as client:
        view = client.get(f"{UPLOAD}/session/{receipt['session_id']}").json()["data"]
    assert view["status"] == "completed"
    assert view["progress_percentage"] == 100.0
    assert view["missing_chunks"] == []


@pytest.mark.parametrize("announce_chunk_size", [True, False], ids=["chunk_size_sent", "chunk_size_learnt"])
@pytest.mark.parametrize("order", ["in_order", "reversed", "shuffled"])
def test_chunked_upload_in_any_order(
    server: RunningServer, unique_video: Path, order: str, announce_chunk_size: bool
) -> None:
    data = unique_video.read_bytes()
    count = len(split(data, CHUNK))
    assert count >= 4
    indexes = list(range(count))
    if order == "reversed":
        indexes.reverse()
    elif order == "shuffled":
        random.Random(7).shuffle(indexes)
    session_id = new_session_id()
    extra = {"chunk_size": CHUNK} if announce_chunk_size else {}
    with server.client() as client:
        last = upload_chunks(client, data, CHUNK, session_id=session_id, order=indexes, file_hash=sha256(data), **extra)
    receipt = last.json()["data"]
    assert receipt["status"] == "completed", receipt
    assert receipt["content_hash"] == sha256(data)
    assert blob_path(server.settings.storage_dir, sha256(data)).read_bytes() == data
    with server.db.session() as session:
        hashes = dict(
            session.execute(
                select(UploadChunk.chunk_index, UploadChunk.chunk_hash).where(UploadChunk.session_id == session_id)
            ).all()
        )
        upload_id = session.scalar(select(UploadSession.id).where(UploadSession.session_id == session_id))
    assert hashes == {i: sha256(chunk) for i, chunk in enumerate(split(data, CHUNK))}
    assert upload_id
    assert not (server.settings.storage_dir / "staging" / upload_id).exists()
    assert not (server.settings.storage_dir / "parts" / f"{upload_id}.part").exists()


def test_chunks_sent_in_parallel(server: RunningServer, unique_video: Path) -> None:
    data = unique_video.read_bytes()
    chunks = split(data, CHUNK)
    session_id = new_session_id()
    with server.client() as client:
        first = post_chunk(client, chunks[0], session_id=session_id, chunk_index=0, total_chunks=len(chunks))
        assert first.status_code == 200

        def send(index: int) -> httpx.Response:
            with server.client() as own:
                return post_chunk(
                    own, chunks[index], session_id=session_id, chunk_index=index, total_chunks=len(chunks)
                )

        with ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(send, range(1, len(chunks))))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    statuses = [r.json()["data"]["status"] for r in responses]
    assert statuses.count("completed") == 1
    assert blob_path(server.settings.storage_dir, sha256(data)).read_bytes() == data


def test_duplicate_chunk_is_accepted_again(server: RunningServer, unique_video: Path) -> None:
    data = unique_video.read_bytes()
    chunks = split(data, CHUNK)
    session_id = new_session_id()
    with server.client() as client:
        for _ in range(2):
            response = post_chunk(client, chunks[1], session_id=session_id, chunk_index=1, total_chunks=len(chunks))
            assert response.status_code == 200, response.text
        receipt = response.json()["data"]
        assert receipt["duplicate_chunk"] is True
        assert receipt["chunks_received"] == 1
        last = upload_chunks(client, data, CHUNK, session_id=session_id, order=[0, *range(2, len(chunks))])
        assert last.json()["data"]["content_hash"] == sha256(data)
        # The final chunk re-sent after completion (its answer was lost): same bytes, same answer.
        again = post_chunk(
            client, chunks[-1], session_id=session_id, chunk_index=len(chunks) - 1, total_chunks=len(chunks)
        )
        assert again.status_code == 200
        assert again.json()["data"]["status"] == "completed"


def test_conflicting_chunk_is_refused_and_the_first_kept(server: RunningServer, unique_video: Path) -> None:
    data = unique_video.read_bytes()
    chunks = split(data, CHUNK)
    session_id = new_session_id()
    with server.client() as client:
        assert post_chunk(client, chunks[0], session_id=session_id, chunk_index=0, total_chunks=len(chunks)).is_success
        forged = bytes(b ^ 0xFF for b in chunks[0])
        conflict = post_chunk(client, forged, session_id=session_id, chunk_index=0, total_chunks=len(chunks))
        assert conflict.status_code == 409
        assert error_code(conflict) == "chunk_conflict"
        last = upload_chunks(client, data, CHUNK, session_id=session_id, order=list(range(1, len(chunks))))
    assert last.json()["data"]["content_hash"] == sha256(data)


def _send_truncated(server: RunningServer, user: str, fields: dict[str, str], payload: bytes, cut: int) -> None:
    """Send a multipart chunk request but drop the connection after ``cut`` bytes of the file."""
    boundary = "vidgateboundary"
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="clip.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    length = len(head) + len(payload) + len(tail)
    host, port = server.base_url.removeprefix("http://").split(":")
    request = (
        f"POST {UPLOAD} HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {server.keys[user]}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(request + head + payload[:cut])


def test_resume_after_a_dropped_connection(server: RunningServer, unique_video: Path) -> None:
    data = unique_video.read_bytes()
    chunks = split(data, CHUNK)
    session_id = new_session_id()
    total = len(chunks)
    with server.client() as client:
        assert post_chunk(client, chunks[0], session_id=session_id, chunk_index=0, total_chunks=total).is_success
        fields = {"session_id": session_id, "chunk_index": "2", "total_chunks": str(total)}
        _send_truncated(server, "alice", fields, chunks[2], cut=len(chunks[2]) // 2)
        assert post_chunk(client, chunks[3], session_id=session_id, chunk_index=3, total_chunks=total).is_success
        view = client.get(f"{UPLOAD}/session/{session_id}").json()["data"]
        assert view["status"] == "active"
        assert 2 in view["missing_chunks"]
        assert 0 not in view["missing_chunks"] and 3 not in view["missing_chunks"]
        # A client resumes by sending exactly what the session says is missing.
        last = None
        for index in view["missing_chunks"]:
            last = post_chunk(client, chunks[index], session_id=session_id, chunk_index=index, total_chunks=total)
            assert last.status_code == 200, last.text
    assert last is not None
    assert last.json()["data"]["status"] == "completed"
    assert last.json()["data"]["content_hash"] == sha256(data)


def test_cancel_removes_the_session_data(server: RunningServer, unique_video: Path) -> None:
    data = unique_video.read_bytes()
    chunks = split(data, CHUNK)
    session_id = new_session_id()
    with server.client() as client:
        for index in (0, 1):
            post_chunk(client, chunks[index], session_id=session_id, chunk_index=index, total_chunks=len(chunks))
        upload_id = client.get(f"{UPLOAD}/session/{session_id}").json()["data"]
        response = client.delete(f"{UPLOAD}/session/{session_id}")
        assert response.status_code == 200
        assert response.json()["message"] == "Upload session cancelled and cleaned up"
        assert response.json()["data"]["status"] == "cancelled"
        cancelled = client.get(f"{UPLOAD}/session/{session_id}").json()["data"]
        # what had arrived before the cancel, chunks and bytes alike; nothing more is expected
        assert cancelled == response.json()["data"]
        assert (cancelled["chunks_received"], cancelled["bytes_received"], cancelled["missing_chunks"]) == (
            2,
            2 * CHUNK,
            [],
        )
        assert cancelled["progress_percentage"] == round(100 * 2 / len(chunks), 2)
        late = post_chunk(client, chunks[2], session_id=session_id, chunk_index=2, total_chunks=len(chunks))
        assert late.status_code == 409
        assert error_code(late) == "session_not_active"
        assert client.get(f"{UPLOAD}/session/{session_id}").json()["data"]["status"] == "cancelled"
    assert upload_id
    with server.db.session() as session:
        rows = session.scalar(select(func.count()).where(UploadChunk.session_id == session_id))
        events = session.scalars(
            select(UploadProgressLog.event_type).where(UploadProgressLog.session_id == session_id)
        ).all()
    assert rows == 0
    assert "upload_cancelled" in events
    assert not any(session_id in p.name for p in part_files(server))


def test_cancel_of_a_completed_upload_is_refused_and_keeps_the_video(server: RunningServer, unique_video: Path) -> None:
    """What the README says DELETE answers: 409 for a completed session, the stored file stays;
    a session that is already cancelled is returned as it is."""
    data = unique_video.read_bytes()
    with server.client() as client:
        receipt = post_chunk(client, data).json()["data"]
        refused = client.delete(f"{UPLOAD}/session/{receipt['session_id']}")
        assert (refused.status_code, error_code(refused)) == (409, "session_not_active")
        assert "is completed; it can no longer be cancelled" in refused.json()["error"]["message"]
        assert client.get(f"{UPLOAD}/session/{receipt['session_id']}").json()["data"]["status"] == "completed"

        open_id = new_session_id()
        post_chunk(client, data[:CHUNK], session_id=open_id, chunk_index=0, total_chunks=2)
        assert client.delete(f"{UPLOAD}/session/{open_id}").json()["data"]["status"] == "cancelled"
        again = client.delete(f"{UPLOAD}/session/{open_id}")
        assert (again.status_code, again.json()["data"]["status"]) == (200, "cancelled")
    assert blob_path(server.settings.storage_dir, sha256(data)).read_bytes() == data


def test_hash_mismatch_fails_the_session(server: RunningServer, unique_video: Path) -> None:
    data = unique_video.read_bytes()
    chunks = split(data, CHUNK)
    session_id = new_session_id()
    wrong = sha256(b"something else")
    with server.client() as client:
        for index, chunk in enumerate(chunks[:-1]):
            assert post_chunk(
                client, chunk, session_id=session_id, chunk_index=index, total_chunks=len(chunks), file_hash=wrong
            ).is_success
        last = post_chunk(
            client, chunks[-1], session_id=session_id, chunk_index=len(chunks) - 1, total_chunks=len(chunks)
        )
        assert last.status_code == 422
        assert error_code(last) == "file_hash_mismatch"
        assert sha256(data) in last.json()["error"]["message"]
        view = client.get(f"{UPLOAD}/session/{session_id}").json()["data"]
    assert view["status"] == "failed"
    assert view["error_code"] == "file_hash_mismatch"
    assert not blob_path(server.settings.storage_dir, sha256(data)).exists()


def test_a_file_hash_sent_only_with_the_last_chunk_is_checked(server: RunningServer, unique_video: Path) -> None:
    """Clients that hash while sending know the hash only at the end (vidgate upload does this)."""
    data = unique_video.read_bytes()
    chunks = split(data, CHUNK)
    with server.client() as client:
        for file_hash, expected in ((sha256(b"other"), 422), (sha256(data), 200)):
            session_id = new_session_id()
            for index, chunk in enumerate(chunks[:-1]):
                assert post_chunk(
                    client, chunk, session_id=session_id, chunk_index=index, total_chunks=len(chunks)
                ).is_success
            last = post_chunk(
                client,
                chunks[-1],
                session_id=session_id,
                chunk_index=len(chunks) - 1,
                total_chunks=len(chunks),
                file_hash=file_hash,
            )
            assert last.status_code == expected, last.text


def test_another_user_gets_404(server: RunningServer, unique_video: Path) -> None:
    data = unique_video.read_bytes()
    chunks = split(data, CHUNK)
    session_id = new_session_id()
    with server.client("alice") as alice, server.client("bob") as bob:
        assert post_chunk(alice, chunks[0], session_id=session_id, chunk_index=0, total_chunks=len(chunks)).is_success
        for response in (
            bob.get(f"{UPLOAD}/session/{session_id}"),
            bob.delete(f"{UPLOAD}/session/{session_id}"),
            post_chunk(bob, chunks[1], session_id=session_id, chunk_index=1, total_chunks=len(chunks)),
        ):
            assert response.status_code == 404
            assert error_code(response) == "session_not_found"
            assert "clip.mp4" not in response.text
        assert alice.get(f"{UPLOAD}/session/{session_id}").json()["data"]["chunks_received"] == 1


def test_authentication_is_required(server: RunningServer) -> None:
    with httpx.Client(base_url=server.base_url) as anonymous:
        missing = anonymous.get(f"{UPLOAD}/session/whatever")
        assert missing.status_code == 401
        assert error_code(missing) == "unauthenticated"
        wrong = anonymous.get(f"{UPLOAD}/session/whatever", headers={"X-API-Key": "vg_not-a-key"})
        assert wrong.status_code == 401
        bearer = anonymous.get(
            f"{UPLOAD}/session/whatever", headers={"Authorization": f"Bearer {server.keys['alice']}"}
        )
        assert bearer.status_code == 404  # authenticated; the session just does not exist
        assert anonymous.get("/health").json()["status"] == "ok"


@pytest.mark.parametrize(
    ("fields", "filename", "status", "code"),
    [
        ({"priority": "0"}, "clip.mp4", 400, "invalid_parameter"),
        ({"priority": "11"}, "clip.mp4", 400, "invalid_parameter"),
        ({"priority": "high"}, "clip.mp4", 400, "invalid_parameter"),
        ({"options": "{not json"}, "clip.mp4", 400, "invalid_options"),
        ({"options": "[1, 2]"}, "clip.mp4", 400, "invalid_options"),
        ({"chunk_index": "5", "total_chunks": "3"}, "clip.mp4", 400, "chunk_index_out_of_range"),
        ({"chunk_index": "-1", "total_chunks": "3"}, "clip.mp4", 400, "invalid_parameter"),
        ({"total_chunks": "101", "chunk_index": "0"}, "clip.mp4", 413, "too_many_chunks"),
        ({"total_chunks": "3"}, "clip.mp4", 400, "invalid_parameter"),
        ({"file_hash": "abc"}, "clip.mp4", 400, "invalid_parameter"),
        ({"session_id": "../etc/passwd"}, "clip.mp4", 400, "invalid_parameter"),
        ({"file_size": str(600 * 1024 * 1024)}, "clip.mp4", 413, "file_too_large"),
        (
            {"chunk_size": str(11 * 1024 * 1024), "total_chunks": "2", "chunk_index": "0"},
            "clip.mp4",
            413,
            "chunk_too_large",
        ),
        ({}, "clip.mp4.exe", 415, "extension_blocked"),
        ({}, "clip.txt", 415, "extension_not_allowed"),
        ({}, "", 400, "invalid_filename"),
    ],
)
def test_bad_parameters_are_refused(
    server: RunningServer, fields: dict[str, str], filename: str, status: int, code: str
) -> None:
    before = set(part_files(server))
    with server.client() as client:
        response = client.post(UPLOAD, data=fields, files={"file": (filename, b"\x00" * 1000, "video/mp4")})
    assert response.status_code == status, response.text
    assert error_code(response) == code
    assert response.json()["error"]["message"]
    assert set(part_files(server)) == before


def test_request_shape_errors(server: RunningServer) -> None:
    with server.client() as client:
        no_file = client.post(UPLOAD, data={"priority": "5"}, files={"other": ("x.mp4", b"123")})
        assert (no_file.status_code, error_code(no_file)) == (400, "missing_file")
        not_multipart = client.post(UPLOAD, content=b"raw", headers={"Content-Type": "application/octet-stream"})
        assert (not_multipart.status_code, error_code(not_multipart)) == (400, "malformed_multipart")
        empty = post_chunk(client, b"")
        assert (empty.status_code, error_code(empty)) == (400, "empty_chunk")
        oversized_field = client.post(UPLOAD, data={"options": "x" * 70_000}, files={"file": ("a.mp4", b"1")})
        assert (oversized_field.status_code, error_code(oversized_field)) == (400, "invalid_parameter")
        unknown = client.get("/v1/nothing-here")
        assert (unknown.status_code, error_code(unknown)) == (404, "not_found")


def test_fields_after_the_file_are_refused(server: RunningServer) -> None:
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n\r\n'
        "0123456789\r\n"
        f'--{boundary}\r\nContent-Disposition: form-data; name="priority"\r\n\r\n3\r\n'
        f"--{boundary}--\r\n"
    ).encode()
    with server.client() as client:
        response = client.post(
            UPLOAD, content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )
    assert response.status_code == 400
    assert error_code(response) == "bad_request"
    assert "before the 'file' part" in response.json()["error"]["message"]


def test_session_rules_mid_session(server: RunningServer, unique_video: Path) -> None:
    data = unique_video.read_bytes()
    chunks = split(data, CHUNK)
    session_id = new_session_id()
    total = len(chunks)
    with server.client() as client:
        assert post_chunk(client, chunks[0], session_id=session_id, chunk_index=0, total_chunks=total).is_success
        changed = post_chunk(client, chunks[1], session_id=session_id, chunk_index=1, total_chunks=total + 1)
        assert (changed.status_code, error_code(changed)) == (400, "total_chunks_mismatch")
        short = post_chunk(client, chunks[1][:100], session_id=session_id, chunk_index=1, total_chunks=total)
        assert (short.status_code, error_code(short)) == (400, "chunk_size_mismatch")
        long = post_chunk(client, chunks[1] + b"x" * 10, session_id=session_id, chunk_index=1, total_chunks=total)
        assert (long.status_code, error_code(long)) == (413, "chunk_too_large")
        view = client.get(f"{UPLOAD}/session/{session_id}").json()["data"]
        assert view["chunks_received"] == 1
        assert view["chunk_size"] == CHUNK
        last = upload_chunks(client, data, CHUNK, session_id=session_id, order=list(range(1, total)))
    assert last.json()["data"]["content_hash"] == sha256(data)


def test_same_content_twice_is_stored_once(server: RunningServer, unique_video: Path) -> None:
    data = unique_video.read_bytes()
    with server.client("alice") as alice, server.client("bob") as bob:
        first = post_chunk(alice, data).json()["data"]
        second = post_chunk(bob, data).json()["data"]
    assert first["video_id"] != second["video_id"]  # each owner has a video of their own
    assert first["session_id"] != second["session_id"]
    assert blob_path(server.settings.storage_dir, sha256(data)).read_bytes() == data


def curl_upload(server: RunningServer, path: Path, part_type: str | None) -> tuple[int, dict[str, Any]]:
    """POST the file the way curl does (``-F "file=@PATH;type=TYPE"``), with the real curl."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.fail("curl is needed for this test: run scripts/debian-deps")
    form = f"file=@{path}" + (f";type={part_type}" if part_type is not None else "")
    key = f"X-API-Key: {server.key_for('alice')}"
    run = subprocess.run(
        [curl, "-sS", "-H", key, "-F", form, "-w", "\n%{http_code}", f"{server.base_url}{UPLOAD}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    body, _, status = run.stdout.rpartition("\n")
    return int(status), json.loads(body)


def test_a_matroska_file_sent_as_video_matroska_is_accepted(server: RunningServer, tmp_path: Path) -> None:
    """Issue 13's reproduction: `curl -F "file=@x.mkv;type=video/matroska" .../v1/upload/video`
    (the IANA type, and what Chromium declares for .mkv) was refused 415 format_mismatch."""
    path = make_video(tmp_path / "x.mkv", "mkv", seed=uuid.uuid4().int % 100_000)
    status, body = curl_upload(server, path, "video/matroska")
    assert status == 200, body
    assert body["data"]["content_hash"] == sha256(path.read_bytes())


def test_generic_or_missing_part_types_claim_nothing(server: RunningServer, tmp_path: Path) -> None:
    """curl's own default for an unknown extension (application/octet-stream), an empty type
    and a part without any Content-Type header are all accepted: the bytes decide."""
    for part_type in (None, "application/octet-stream"):
        path = make_video(tmp_path / f"{uuid.uuid4().hex[:8]}.mkv", "mkv", seed=uuid.uuid4().int % 100_000)
        status, body = curl_upload(server, path, part_type)
        assert status == 200, (part_type, body)
    for header in ("Content-Type: \r\n", ""):  # curl refuses to send an empty type: write the part by hand
        path = make_video(tmp_path / f"{uuid.uuid4().hex[:8]}.mkv", "mkv", seed=uuid.uuid4().int % 100_000)
        boundary = uuid.uuid4().hex
        payload = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
            f"{header}\r\n".encode()
            + path.read_bytes()
            + f"\r\n--{boundary}--\r\n".encode()
        )
        with server.client() as client:
            response = client.post(
                UPLOAD, content=payload, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
            )
        assert response.status_code == 200, (header, response.text)


def test_a_real_mismatch_is_refused_in_words_that_do_not_contradict_themselves(
    server: RunningServer, tmp_path: Path
) -> None:
    path = make_video(tmp_path / "x.mkv", "mkv", seed=uuid.uuid4().int % 100_000)
    status, body = curl_upload(server, path, "video/mp4")
    assert status == 415, body
    assert body["error"]["code"] == "format_mismatch"
    assert body["error"]["message"] == (
        "The file is Matroska, but it was declared as video/mp4, a type for MP4 (ISO BMFF) or QuickTime MOV; "
        "send it as video/matroska or without a type."
    )
