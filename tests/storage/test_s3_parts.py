"""A server whose uploads in progress live in the bucket (S3PartStore on Swift): Swift stopped
in the middle of an upload (503, resumable, completes once it is back); cancel, expiry and the
orphan sweep leave no multipart upload and no object behind (checked with ListMultipartUploads
and a listing); Redis (the upload locks) unreachable: 503, resumable. The store's own
behaviour is in test_part_store_contract.py."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from tests.conftest import RunningServer, free_port, running_server
from tests.helpers import active_session_row, error_code, post_chunk, wait_until
from tests.storage.swift import credentials, keys_in, own_proxy, raw_client, settings_for
from tests.storage.test_part_store_contract import write
from vidgate.db import migrate
from vidgate.db.engine import Database
from vidgate.db.models import SessionStatus, UploadSession, utcnow
from vidgate.db.upload_ids import SessionUploadIds
from vidgate.hashing import new_sha256
from vidgate.storage.s3 import S3BlobStore
from vidgate.storage.s3_parts import S3PartStore

MIB = 1 << 20
TUS = {"Tus-Resumable": "1.0.0"}
MKV = {"filename": "clip.mkv", "content_type": "video/x-matroska"}  # big_video


def _leftovers(bucket: str, prefix: str) -> tuple[list[str], list[str]]:
    uploads = f"{prefix}uploads/"
    pending = raw_client().list_multipart_uploads(Bucket=bucket, Prefix=uploads).get("Uploads", [])
    return keys_in(bucket, uploads), [u["Key"] for u in pending]


def _settings(tmp_path: Path, bucket: str, **storage: Any) -> Any:
    settings = settings_for(tmp_path, bucket, f"p2-{uuid.uuid4().hex[:8]}/", s3_part_size=5 * MIB, **storage)
    settings.upload.assembly_stall_seconds = 0
    return settings


@pytest.fixture
def server(swift: str, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningServer]:
    credentials(monkeypatch)
    with running_server(_settings(tmp_path, bucket)) as running:
        assert isinstance(running.services.uploads.parts, S3PartStore)
        yield running


def _list_parts_calls() -> float:
    return REGISTRY.get_sample_value("vidgate_s3_requests_total", {"operation": "ListParts"}) or 0.0


def _part_store(tmp_path: Path, bucket: str, database: Database, prefix: str, part_size: int) -> S3PartStore:
    settings = settings_for(tmp_path, bucket, prefix, s3_part_size=part_size, s3_concurrency=2)
    ids = SessionUploadIds(database)
    return S3PartStore(S3BlobStore(settings.storage), ids, tmp_path / "host", max_file_size=500 * MIB)


def test_a_host_that_recorded_the_last_request_makes_no_list_parts_and_one_that_did_not_does(
    swift: str, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Swift a ListParts costs about what an UploadPart does, so a host that flushed and
    recorded an upload's last request knows its parts. Not after a flush whose recording failed:
    another host (here with another part size) takes that request again and reaches the same
    offset with other parts, which the first host must then list."""
    credentials(monkeypatch)
    prefix = f"tails-{uuid.uuid4().hex[:8]}/"
    database = Database(f"sqlite:///{tmp_path / 'parts.db'}")
    migrate.upgrade(database)
    first = _part_store(tmp_path / "a", bucket, database, prefix, 5 * MIB)
    other = _part_store(tmp_path / "b", bucket, database, prefix, 12 * MIB)
    try:
        key = active_session_row(database, "clip.mp4")
        data = os.urandom(40 * MIB + 3)
        write(first, key, data[: 12 * MIB], 0)  # parts 5 + 7 MiB
        listed = _list_parts_calls()
        write(first, key, data[12 * MIB : 24 * MIB], 12 * MIB)  # the same host goes on: nothing listed
        assert _list_parts_calls() == listed
        write(first, key, data[24 * MIB : 36 * MIB], 24 * MIB, recorded=False)  # flushed, never recorded
        write(other, key, data[24 * MIB : 36 * MIB], 24 * MIB)  # taken again elsewhere: one part of 12 MiB
        listed = _list_parts_calls()
        write(first, key, data[36 * MIB :], 36 * MIB)  # offset 36 MiB again, but of other parts: listed
        assert _list_parts_calls() == listed + 1
        hasher = new_sha256()
        first.assemble(key, [], len(data), hasher, 0, fsync=False)
        assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()
        source = first.assembled(key)
        reader = source.reader()
        try:
            assert reader.pread(source.size, 0) == data
        finally:
            reader.close()
    finally:
        first.close()
        other.close()
        database.dispose()


def _create_tus(client: httpx.Client, length: int) -> str:
    name = base64.b64encode(b"clip.mkv").decode()
    created = client.post(
        "/v1/tus/", headers={**TUS, "Upload-Length": str(length), "Upload-Metadata": f"filename {name}"}
    )
    assert created.status_code == 201, created.text
    return str(created.headers["Location"]).rsplit("/", 1)[-1]


def _patch(client: httpx.Client, upload: str, offset: int, body: bytes) -> httpx.Response:
    return client.patch(
        f"/v1/tus/{upload}",
        content=body,
        headers={**TUS, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"},
    )


def test_a_tus_upload_lists_its_parts_once_before_completion(server: RunningServer, big_video: bytes) -> None:
    """The PATCH after a recorded one on the same host starts from what that one left (the
    upload flow tells the writer its bytes are on record): one ListParts, for the first PATCH."""
    data = big_video
    with server.client() as client:
        upload = _create_tus(client, len(data))
        listed = _list_parts_calls()
        offset = 0
        while offset < len(data) - 6 * MIB:
            answer = _patch(client, upload, offset, data[offset : offset + 6 * MIB])
            assert answer.status_code == 204, answer.text
            offset = int(answer.headers["Upload-Offset"])
        assert offset > 6 * MIB and _list_parts_calls() == listed + 1
        answer = _patch(client, upload, offset, data[offset:])
        assert answer.status_code == 204, answer.text
        assert answer.headers["Vidgate-Content-Hash"] == hashlib.sha256(data).hexdigest()


@pytest.mark.slow
def test_swift_stopped_mid_upload_is_503_and_the_upload_resumes(
    bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, big_video: bytes
) -> None:
    credentials(monkeypatch)
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    settings = _settings(tmp_path, bucket, s3_endpoint_url=endpoint, s3_max_attempts=2, s3_timeout_seconds=3)
    data = big_video
    digest = hashlib.sha256(data).hexdigest()
    chunk_size = 5 * MIB
    chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]
    session = f"outage-{uuid.uuid4().hex[:8]}"
    fields = {"session_id": session, "total_chunks": len(chunks), "chunk_size": chunk_size, "file_hash": digest, **MKV}
    (tmp_path / "p1").mkdir()
    (tmp_path / "p2").mkdir()
    with running_server(settings) as server, server.client() as client:
        with own_proxy(port, tmp_path / "p1"):
            upload = _create_tus(client, len(data))
            assert _patch(client, upload, 0, data[: 3 * MIB]).status_code == 204  # an incomplete part in S3
            assert post_chunk(client, chunks[0], chunk_index=0, **fields).status_code == 200
        # Swift is down: both protocols answer 503 and keep what was acknowledged
        refused = _patch(client, upload, 3 * MIB, data[3 * MIB : 9 * MIB])
        assert refused.status_code == 503 and error_code(refused) == "storage_unavailable", refused.text
        assert client.head(f"/v1/tus/{upload}", headers=TUS).headers["Upload-Offset"] == str(3 * MIB)
        refused = post_chunk(client, chunks[1], chunk_index=1, **fields)
        assert refused.status_code == 503 and error_code(refused) == "storage_unavailable", refused.text
        view = client.get(f"/v1/upload/video/session/{session}").json()["data"]
        assert view["status"] == "active" and view["chunks_received"] == 1
        with own_proxy(port, tmp_path / "p2"):  # back: both complete
            offset = 3 * MIB
            while offset < len(data):
                answer = _patch(client, upload, offset, data[offset : offset + 6 * MIB])
                assert answer.status_code == 204, answer.text
                offset = int(answer.headers["Upload-Offset"])
            assert answer.headers["Vidgate-Content-Hash"] == digest
            for index in range(1, len(chunks)):
                last = post_chunk(client, chunks[index], chunk_index=index, **fields)
                assert last.status_code == 200, last.text
            assert last.json()["data"]["content_hash"] == digest  # stored already: validated from the blob
            # removed in the background once each upload completed
            wait_until(lambda: _leftovers(bucket, settings.storage.s3_prefix) == ([], []))
        assert keys_in(bucket, f"{settings.storage.s3_prefix}blobs/") == [
            f"{settings.storage.s3_prefix}blobs/{digest[:2]}/{digest}"
        ]


@pytest.mark.slow
def test_cancel_leaves_nothing_in_the_bucket(server: RunningServer, bucket: str, big_video: bytes) -> None:
    prefix = server.settings.storage.s3_prefix
    with server.client() as client:
        session = f"cancel-{uuid.uuid4().hex[:8]}"
        sent = post_chunk(client, big_video[: 5 * MIB], session_id=session, chunk_index=0, total_chunks=3, **MKV)
        assert sent.status_code == 200, sent.text
        upload = _create_tus(client, len(big_video))
        assert _patch(client, upload, 0, big_video[: 7 * MIB]).status_code == 204  # a part and an incomplete part
        objects, pending = _leftovers(bucket, prefix)
        assert objects and len(pending) == 2  # both uploads are in the bucket
        assert client.delete(f"/v1/upload/video/session/{session}").status_code == 200
        assert client.delete(f"/v1/tus/{upload}", headers=TUS).status_code == 204
    assert _leftovers(bucket, prefix) == ([], [])


@pytest.mark.slow
def test_expiry_and_the_orphan_sweep_leave_nothing_in_the_bucket(
    server: RunningServer, bucket: str, big_video: bytes
) -> None:
    prefix = server.settings.storage.s3_prefix
    with server.client() as client:
        session = f"expire-{uuid.uuid4().hex[:8]}"
        sent = post_chunk(client, big_video[: 5 * MIB], session_id=session, chunk_index=0, total_chunks=3, **MKV)
        assert sent.status_code == 200, sent.text
        upload = _create_tus(client, len(big_video))
        assert _patch(client, upload, 0, big_video[:MIB]).status_code == 204
    # what a crash leaves: a multipart upload and an incomplete part nobody's session owns
    s3 = raw_client()
    s3.create_multipart_upload(Bucket=bucket, Key=f"{prefix}uploads/{uuid.uuid4()}")
    s3.put_object(Bucket=bucket, Key=f"{prefix}uploads/{uuid.uuid4()}/incomplete/1", Body=b"rest")
    report = server.services.cleanup.run(now=utcnow() + timedelta(days=3), orphan_grace_seconds=0)
    assert report.expired_sessions == 2
    assert report.orphan_uploads_removed >= 2
    with server.db.session() as tx:
        row = tx.query(UploadSession).filter(UploadSession.session_id == session).one()
        assert row.status is SessionStatus.EXPIRED and row.s3_upload_id is None
    assert _leftovers(bucket, prefix) == ([], [])


class _RedisRelay:
    """A TCP relay to the machine's Redis on a port of its own, which can be cut and restored:
    Redis unreachable for one server, as in an outage, while the shared Redis stays up."""

    def __init__(self) -> None:
        self.port = free_port()
        self.sockets: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.restore()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def restore(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def cut(self) -> None:
        assert self.listener is not None
        with contextlib.suppress(OSError):  # wakes the accept() in its thread: the port stops listening now
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", 6379))
            self.sockets += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, target), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(1 << 16):
                target.sendall(data)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)


@pytest.mark.slow
def test_redis_unreachable_refuses_writes_with_503_and_the_upload_resumes(
    swift: str, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, big_video: bytes
) -> None:
    """Parts in the bucket and Redis locks: while Redis is unreachable a PATCH is refused
    unwritten (no host-local lock would keep another host off the same offset), the offset
    stays, and the upload completes once Redis is back."""
    credentials(monkeypatch)
    relay = _RedisRelay()
    settings = _settings(tmp_path, bucket)
    settings.upload.locks = "redis"
    settings.websocket.redis_url = relay.url
    data = big_video
    digest = hashlib.sha256(data).hexdigest()
    with running_server(settings) as server, server.client() as client:
        upload = _create_tus(client, len(data))
        assert _patch(client, upload, 0, data[: 3 * MIB]).status_code == 204
        relay.cut()
        refused = _patch(client, upload, 3 * MIB, data[3 * MIB : 9 * MIB])
        assert refused.status_code == 503 and error_code(refused) == "lock_unavailable", refused.text
        assert client.head(f"/v1/tus/{upload}", headers=TUS).headers["Upload-Offset"] == str(3 * MIB)
        relay.restore()
        answer = _patch(client, upload, 3 * MIB, data[3 * MIB :])
        assert answer.status_code == 204, answer.text
        assert answer.headers["Vidgate-Content-Hash"] == digest
    relay.cut()
