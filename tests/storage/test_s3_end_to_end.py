"""End to end on S3 with no shared disk: `vidgate serve` (STORAGE_BACKEND=s3) and a `vidgate
worker` (Celery over Redis) whose STORAGE_DIR is another, empty folder; a real clip is
uploaded, lands in the bucket once, and the worker processes it reading from S3 only."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cluster import redis_database
from tests.conftest import free_port, postgres_database
from tests.helpers import post_chunk, wait_for_video
from tests.sample_clips import clips  # noqa: F401  (fixture)
from tests.storage.swift import keys_in, s3_env
from vidgate.config import all_env_names

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def _env(**more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in all_env_names() and not k.startswith("AWS_")}
    env.update(AUTH_CREATE_DEV_KEY="false", VIDGATE_LOG_LEVEL="info", **more)
    return env


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "vidgate", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)


def _files_under(directory: Path) -> list[Path]:
    return [path for path in directory.rglob("*") if path.is_file()]


def test_serve_and_a_worker_without_shared_disk_store_in_s3_and_process(
    swift: str,
    bucket: str,
    tmp_path: Path,
    clips: dict[str, Path],  # noqa: F811
) -> None:
    prefix = f"e2e-{uuid.uuid4().hex[:8]}/"
    clip = clips["bikes"]
    data = clip.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    api_dir, worker_dir = tmp_path / "api", tmp_path / "worker"
    with postgres_database() as url, redis_database() as broker:
        common = {
            **s3_env(bucket, prefix),
            "DATABASE_URL": url,
            "CELERY_BROKER_URL": broker,
            "CELERY_RESULT_BACKEND": broker,
            "PROCESSING_QUEUE": "celery",
            "PROCESSING_DISPATCH_INTERVAL_SECONDS": "0.3",
        }
        api_env = _env(**common, VIDGATE_DATA_DIR=str(api_dir), STORAGE_DIR=str(api_dir / "storage"))
        worker_env = _env(**common, VIDGATE_DATA_DIR=str(worker_dir), STORAGE_DIR=str(worker_dir / "storage"))
        subprocess.run([sys.executable, "-m", "vidgate", "migrate"], env=api_env, check=True, capture_output=True)
        key = subprocess.run(
            [sys.executable, "-m", "vidgate", "keys", "create", "--user", "alice"],
            env=api_env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        port = free_port()
        serve_log, worker_log = tmp_path / "serve.log", tmp_path / "worker.log"
        with (
            _process(["serve", "--port", str(port)], api_env, serve_log),
            _process(["worker", "--concurrency", "1"], worker_env, worker_log),
            httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key}, timeout=60) as client,
        ):
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if client.get("/ready").status_code == 200:
                        break
                assert time.monotonic() < deadline, serve_log.read_text()[-3000:]
                time.sleep(0.2)
            response = post_chunk(client, data, filename=clip.name, content_type="video/mp4")
            assert response.status_code == 200, response.text
            assert response.json()["data"]["content_hash"] == digest
            video_id = response.json()["data"]["video_id"]
            assert f"{prefix}blobs/{digest[:2]}/{digest}" in keys_in(bucket, prefix)
            assert not _files_under(api_dir / "storage" / "blobs")  # nothing kept on the API's disk
            video = wait_for_video(client, video_id, 180)
            assert video["status"] == "completed", (video, worker_log.read_text()[-3000:])
            result = client.get(f"/v1/videos/{video_id}/result").json()["data"]
            assert result["metadata"]["size_bytes"] == len(data)
            assert result["hashes"]["sha256"] == digest  # read back from S3 by the worker
            stored = keys_in(bucket, prefix)
            assert {
                f"{prefix}derived/{digest[:2]}/{digest}/{name}" for name in ("poster.jpg", "storyboard.jpg")
            } <= set(stored)
            poster = client.get(f"/v1/videos/{video_id}/poster.jpg")
            assert poster.status_code == 200 and poster.content[:2] == b"\xff\xd8"  # a JPEG, from the bucket
            ranged = client.get(f"/v1/videos/{video_id}/content", headers={"Range": "bytes=100-199"})
            assert ranged.status_code == 206 and ranged.content == data[100:200]
            whole = client.get(f"/v1/videos/{video_id}/content")
            assert whole.status_code == 200 and hashlib.sha256(whole.content).hexdigest() == digest
            # the worker never had the file on its disk
            assert not [p for p in _files_under(worker_dir) if p.stat().st_size >= len(data) // 2]
            assert "processing" in worker_log.read_text()
