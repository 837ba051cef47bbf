"""The real S3 server of the tests: OpenStack Swift with s3api, started by scripts/swift (which
installs and configures it on a fresh machine, and returns at once when it is running)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.conftest import make_settings
from vidgate.config import Settings

ROOT = Path(__file__).resolve().parents[2]
ENDPOINT = "http://127.0.0.1:16280"
ACCESS_KEY, SECRET_KEY = "test:tester", "testing"  # scripts/swift-conf/proxy-server.conf (tempauth)
SWIFT_CONF = Path(os.environ.get("SWIFT_HOME", "/var/lib/vidgate-swift")) / "etc"


def start_swift() -> str:
    done = subprocess.run([str(ROOT / "scripts" / "swift")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"scripts/swift failed: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return ENDPOINT


def credentials(monkeypatch: Any, secret: str = SECRET_KEY) -> None:
    """The standard AWS chain's environment variables, as an operator would set them."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")  # nothing of the machine's own profiles
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)


def s3_env(bucket: str, prefix: str = "", endpoint: str = ENDPOINT) -> dict[str, str]:
    """Environment variables of a vidgate process storing in ``bucket`` on Swift."""
    return {
        "STORAGE_BACKEND": "s3",
        "STORAGE_S3_ENDPOINT_URL": endpoint,
        "STORAGE_S3_BUCKET": bucket,
        "STORAGE_S3_PREFIX": prefix,
        "STORAGE_S3_ADDRESSING_STYLE": "path",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }


def s3_storage(bucket: str, prefix: str = "", endpoint: str = ENDPOINT, **more: object) -> dict[str, object]:
    """The ``storage`` settings group of the same."""
    return {
        "backend": "s3",
        "s3_endpoint_url": endpoint,
        "s3_bucket": bucket,
        "s3_prefix": prefix,
        "s3_addressing_style": "path",
        **more,
    }


def settings_for(directory: Path, bucket: str, prefix: str = "", **storage: object) -> Settings:
    return make_settings(
        directory, f"sqlite:///{directory / 'vidgate.db'}", storage=s3_storage(bucket, prefix, **storage)
    )


def new_bucket_name() -> str:
    return f"vidgate-test-{uuid.uuid4().hex[:12]}"


def raw_client(endpoint: str = ENDPOINT) -> Any:
    """A bare boto3 client, to look into the bucket from outside vidgate."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 3}),
    )


def keys_in(bucket: str, prefix: str = "") -> list[str]:
    pages = raw_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def empty_and_delete(bucket: str) -> None:
    client = raw_client()
    with contextlib.suppress(client.exceptions.NoSuchBucket):
        for key in keys_in(bucket):
            client.delete_object(Bucket=bucket, Key=key)
        uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        for upload in uploads:
            client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        client.delete_bucket(Bucket=bucket)


@contextlib.contextmanager
def own_proxy(port: int, directory: Path, *, backends_down: bool = False) -> Iterator[subprocess.Popen[bytes]]:
    """A Swift proxy of its own on ``port`` (the shared storage servers behind it, or, with
    ``backends_down``, rings naming ports nothing listens on: every request then meets a Swift
    that answers 503), so that a test can stop "Swift" without stopping it for the others."""
    swift_dir = SWIFT_CONF
    if backends_down:
        swift_dir = directory / "swift"
        swift_dir.mkdir()
        for number, ring in enumerate(("account", "container", "object")):
            builder = str(swift_dir / f"{ring}.builder")
            for args in (
                ["create", "4", "1", "1"],
                ["add", "--region", "1", "--zone", "1", "--ip", "127.0.0.1", "--port", str(9 + number)],
            ):
                extra = ["--device", "d1", "--weight", "100"] if args[0] == "add" else []
                subprocess.run(["swift-ring-builder", builder, *args, *extra], check=True, capture_output=True)
            subprocess.run(["swift-ring-builder", builder, "rebalance"], capture_output=True)
    conf = (SWIFT_CONF / "proxy-server.conf").read_text()
    conf = conf.replace("bind_port = 16280", f"bind_port = {port}").replace(
        f"swift_dir = {SWIFT_CONF}", f"swift_dir = {swift_dir}"
    )
    conf = conf.replace("workers = 2", "workers = 0")  # one process: nothing to re-read after dropping root
    path = directory / "proxy-server.conf"
    path.write_text(conf)
    log = (directory / "proxy.log").open("wb")
    process = subprocess.Popen(
        ["swift-proxy-server", str(path)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 30
    import http.client

    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/info")
            if connection.getresponse().status == 200:
                break
        except OSError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, (directory / "proxy.log").read_text()[-2000:]
        time.sleep(0.1)
    try:
        yield process
    finally:
        stop_proxy(process)


def stop_proxy(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)
