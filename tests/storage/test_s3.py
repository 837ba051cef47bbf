"""S3BlobStore against Swift: what only a remote store has (unreachable, 5xx, credentials,
bucket, throttling, metrics), and the HTTP answers a server storing in S3 gives then."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from tests.conftest import free_port, running_server
from tests.helpers import error_code, post_chunk, wait_for_video
from tests.media import make_mp4
from tests.storage.swift import (
    ACCESS_KEY,
    credentials,
    empty_and_delete,
    keys_in,
    new_bucket_name,
    own_proxy,
    raw_client,
    s3_env,
    settings_for,
    stop_proxy,
)
from vidgate.config import all_env_names
from vidgate.errors import StorageMisconfigured, StorageUnavailable
from vidgate.storage.s3 import S3BlobStore


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _store(tmp_path: Path, bucket: str, **storage: Any) -> S3BlobStore:
    return S3BlobStore(settings_for(tmp_path, bucket, f"t-{uuid.uuid4().hex[:8]}/", **storage).storage)


def test_a_stopped_swift_is_storage_unavailable(bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    credentials(monkeypatch)
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with own_proxy(port, tmp_path) as proxy:
        store = _store(tmp_path, bucket, s3_endpoint_url=endpoint, s3_max_attempts=2, s3_timeout_seconds=3)
        store.check()
        stop_proxy(proxy)
        errors = _metric("vidgate_s3_errors_total", operation="HeadBucket", kind="connection")
        with pytest.raises(StorageUnavailable, match="unreachable"):
            store.check()
        assert _metric("vidgate_s3_errors_total", operation="HeadBucket", kind="connection") == errors + 2  # retried
        source = tmp_path / "f"
        source.write_bytes(b"x" * 1000)
        with pytest.raises(StorageUnavailable):
            store.put_file(hashlib.sha256(b"x" * 1000).hexdigest(), source)
        assert source.exists()  # kept, to be stored when the store is back


def test_swift_answering_5xx_is_storage_unavailable(
    bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy whose storage servers are all down: Swift itself answers 503."""
    credentials(monkeypatch)
    port = free_port()
    with own_proxy(port, tmp_path, backends_down=True):
        store = _store(tmp_path, bucket, s3_endpoint_url=f"http://127.0.0.1:{port}", s3_max_attempts=2)
        before = _metric("vidgate_s3_errors_total", operation="HeadObject", kind="server")
        with pytest.raises(StorageUnavailable) as caught:
            store.exists(hashlib.sha256(b"y").hexdigest())
        assert caught.value.status == 503 and caught.value.code == "storage_unavailable"
        assert _metric("vidgate_s3_errors_total", operation="HeadObject", kind="server") == before + 2


def test_wrong_credentials_and_a_missing_bucket_are_named(
    swift: str, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials(monkeypatch, secret="not-the-secret")
    with pytest.raises(StorageMisconfigured, match="AWS_SECRET_ACCESS_KEY"):
        _store(tmp_path, bucket).check()
    credentials(monkeypatch)
    with pytest.raises(StorageMisconfigured, match=r"does not exist: create it with `vidgate storage init`"):
        _store(tmp_path, new_bucket_name()).check()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageMisconfigured, match="No S3 credentials"):
        _store(tmp_path, bucket).check()


def _vidgate(
    args: list[str], env: dict[str, str], tmp_path: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k.upper() not in all_env_names() and not k.startswith("AWS_")}
    base.update(VIDGATE_DATA_DIR=str(tmp_path / "data"), AUTH_CREATE_DEV_KEY="false", **env)
    return subprocess.run(
        [sys.executable, "-m", "vidgate", *args], env=base, capture_output=True, text=True, timeout=timeout
    )


def test_serve_refuses_wrong_credentials_and_a_missing_bucket_which_storage_init_creates(
    swift: str, bucket: str, tmp_path: Path
) -> None:
    serve = ["serve", "--port", str(free_port())]
    wrong = _vidgate(serve, {**s3_env(bucket), "AWS_SECRET_ACCESS_KEY": "wrong"}, tmp_path)
    assert wrong.returncode == 1
    assert "refused our credentials" in wrong.stderr and "AWS_SECRET_ACCESS_KEY" in wrong.stderr
    assert "wrong" not in wrong.stderr + wrong.stdout  # the secret is never shown
    assert ACCESS_KEY not in wrong.stderr + wrong.stdout  # nor the key id
    missing = new_bucket_name()
    try:
        refused = _vidgate(serve, s3_env(missing), tmp_path)
        assert refused.returncode == 1
        assert f"bucket {missing!r} (STORAGE_S3_BUCKET)" in refused.stderr and "vidgate storage init" in refused.stderr
        init = _vidgate(["storage", "init"], s3_env(missing), tmp_path)
        assert init.returncode == 0, init.stderr
        assert "created" in init.stdout
        raw_client().head_bucket(Bucket=missing)  # there now
        again = _vidgate(["storage", "init"], s3_env(missing), tmp_path)
        assert again.returncode == 0 and "already there" in again.stdout
    finally:
        empty_and_delete(missing)


def test_slowdown_is_retried_with_backoff(bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Swift's ratelimit needs memcached (not run here), so the SlowDown answers are made at the
    client's transport (botocore's before-send hook), then the real Swift answers: the point is
    that botocore's standard retry mode, as we configure it, takes SlowDown for throttling."""
    from botocore.awsrequest import AWSResponse

    credentials(monkeypatch)
    store = _store(tmp_path, bucket, s3_max_attempts=4)
    throttled: list[str] = []
    body = (
        b"<?xml version='1.0'?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
    )

    class Raw:
        def stream(self, **_: Any) -> Any:
            yield body

    def slow_down(request: Any, **_: Any) -> AWSResponse | None:
        if len(throttled) < 2:
            throttled.append(request.url)
            return AWSResponse(request.url, 503, {"Content-Type": "application/xml"}, Raw())
        return None

    store.client.meta.events.register_first("before-send.s3.HeadBucket", slow_down)
    before = _metric("vidgate_s3_errors_total", operation="HeadBucket", kind="throttled")
    requests = _metric("vidgate_s3_requests_total", operation="HeadBucket")
    store.check()  # two SlowDowns, then the real answer
    assert len(throttled) == 2
    assert _metric("vidgate_s3_errors_total", operation="HeadBucket", kind="throttled") == before + 2
    assert _metric("vidgate_s3_requests_total", operation="HeadBucket") == requests + 3


def test_a_stream_that_breaks_off_is_read_on_and_a_failing_get_is_raised(
    bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """open()'s reader holds one GET open while processing decodes; the server may drop it meanwhile:
    the reader reads on from where it stopped with a new GET. A new GET that fails is the store's
    failure (503 for the caller), not retried here."""
    credentials(monkeypatch)
    store = _store(tmp_path, bucket, s3_read_buffer=64 << 10)
    data = os.urandom((1 << 20) + 99)
    path = tmp_path / "blob"
    path.write_bytes(data)
    digest = store.put_file(hashlib.sha256(data).hexdigest(), path)
    real = store.stream_object
    opened: list[int] = []

    def breaks_off(object_key: str, start: int, end: int, chunk_size: int = 1 << 18) -> Any:
        opened.append(start)
        for count, piece in enumerate(real(object_key, start, end, chunk_size)):
            if len(opened) == 1 and count == 3:
                raise StorageUnavailable("the connection was reset")
            yield piece

    monkeypatch.setattr(store, "stream_object", breaks_off)
    with store.open(digest) as handle:
        assert handle.read() == data
        assert opened == [0, 3 * (64 << 10)] and handle.raw.requests == 2  # type: ignore[attr-defined]

    def fails(object_key: str, start: int, end: int, chunk_size: int = 1 << 18) -> Any:
        raise StorageUnavailable("the object store is unreachable")
        yield b""

    monkeypatch.setattr(store, "stream_object", fails)
    with store.open(digest) as handle, pytest.raises(StorageUnavailable):
        handle.read(10)


@pytest.mark.slow
def test_a_server_on_s3_answers_503_while_swift_is_stopped_and_completes_once_it_is_back(
    bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials(monkeypatch)
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    settings = settings_for(
        tmp_path,
        bucket,
        f"srv-{uuid.uuid4().hex[:8]}/",
        s3_endpoint_url=endpoint,
        s3_max_attempts=2,
        s3_timeout_seconds=3,
        parts="local",  # phase 1: the part on local disk, the bucket at completion (test_s3_parts.py: in the bucket)
    )
    settings.upload.assembly_stall_seconds = 0
    clip = make_mp4(tmp_path / "clip.mp4").read_bytes()
    (tmp_path / "p1").mkdir()
    (tmp_path / "p2").mkdir()
    with own_proxy(port, tmp_path / "p1") as proxy, running_server(settings) as server, server.client() as client:
        stop_proxy(proxy)
        refused = post_chunk(client, clip)
        assert refused.status_code == 503, refused.text
        assert error_code(refused) == "storage_unavailable"
        ready = client.get("/ready")
        assert ready.status_code == 503 and not ready.json()["checks"]["storage"]["ok"]
        with own_proxy(port, tmp_path / "p2"):
            assert client.get("/ready").json()["checks"]["storage"]["ok"]
            report = server.services.cleanup.run()  # what the periodic sweep does: assemble again
            assert report.reassembled_sessions == 1
            digest = hashlib.sha256(clip).hexdigest()
            assert f"{settings.storage.s3_prefix}blobs/{digest[:2]}/{digest}" in keys_in(
                bucket, settings.storage.s3_prefix
            )
            listing = client.get("/v1/videos").json()["data"]["items"]
            assert len(listing) == 1
            video = wait_for_video(client, listing[0]["video_id"], 90)
            assert video["status"] == "completed", video
            content = client.get(f"/v1/videos/{listing[0]['video_id']}/content", headers={"Range": "bytes=10-19"})
            assert content.status_code == 206 and content.content == clip[10:20]
