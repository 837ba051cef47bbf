"""A distributed-mode cluster for tests: an API server in this process and real `vidgate
worker` processes sharing one database, storage directory and Redis (the shared server on
127.0.0.1:6379, one database per test, or a Redis the test starts on its own port)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import RunningServer, database_url_for, make_settings, running_server
from tests.helpers import post_chunk, wait_for_video
from vidgate.config import all_env_names


@contextlib.contextmanager
def redis_database() -> Iterator[str]:
    """A Redis database of the shared server for this test alone, emptied before and after."""
    client = redis.Redis(host="127.0.0.1", port=6379)
    for number in range(1, 16):
        if client.set(f"vidgate-test-lock:{number}", "1", nx=True, ex=600):
            break
    else:
        pytest.fail("no free Redis database for the test")
    url = f"redis://127.0.0.1:6379/{number}"
    redis.Redis.from_url(url).flushdb()
    try:
        yield url
    finally:
        redis.Redis.from_url(url).flushdb()
        client.delete(f"vidgate-test-lock:{number}")
        client.close()


@contextlib.contextmanager
def own_redis(port: int, directory: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(redis.ConnectionError):
            if client.ping():
                break
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=10)


class Cluster:
    """An API server (in this process) and `vidgate worker` processes sharing one database,
    storage directory and Redis."""

    def __init__(self, server: RunningServer, env: dict[str, str]) -> None:
        self.server = server
        self.env = env
        self.workers: list[subprocess.Popen[str]] = []

    def start_worker(self, *args: str) -> subprocess.Popen[str]:
        log = (self.server.settings.server.data_dir / f"worker-{len(self.workers)}.log").open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", "vidgate", "worker", *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.workers.append(process)
        return process

    def stop_workers(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=20)
        self.workers.clear()

    def upload(self, path: Path, user: str = "alice", **fields: object) -> str:
        with self.server.client(user) as client:
            response = post_chunk(client, path.read_bytes(), filename=path.name, content_type="", **fields)
        assert response.status_code == 200, response.text
        return str(response.json()["data"]["video_id"])

    def wait(self, video_id: str, timeout: float = 90) -> dict[str, object]:
        with self.server.client() as client:
            return wait_for_video(client, video_id, timeout)

    def worker_logs(self) -> str:
        return "\n".join(p.read_text()[-3000:] for p in self.server.settings.server.data_dir.glob("worker-*.log"))


@contextlib.contextmanager
def cluster(backend: str, directory: Path, broker: str, **processing: object) -> Iterator[Cluster]:
    processing = {"queue": "celery", "dispatch_interval_seconds": 0.3, **processing}
    with database_url_for(backend, directory) as url:
        settings = make_settings(
            directory, url, processing=processing, celery={"broker_url": broker, "result_backend": broker}
        )
        env = {k: v for k, v in os.environ.items() if k.upper() not in all_env_names()}
        env.update(
            VIDGATE_DATA_DIR=str(directory),
            DATABASE_URL=url,
            CELERY_BROKER_URL=broker,
            CELERY_RESULT_BACKEND=broker,
            AUTH_CREATE_DEV_KEY="false",
            VIDGATE_LOG_LEVEL="info",
            **{f"PROCESSING_{key.upper()}": str(value) for key, value in processing.items()},
        )
        with running_server(settings) as server:
            running = Cluster(server, env)
            try:
                yield running
            finally:
                running.stop_workers()
