"""Two `vidgate serve` hosts with no shared disk (each its own STORAGE_DIR), one PostgreSQL,
Redis locks and uploads in progress in the bucket (S3 multipart uploads on Swift): seed
chunks and tus PATCHes alternate between the hosts, a host killed with SIGKILL in the middle
of a request loses nothing that was acknowledged, and the client finishes on the other host.
Each upload completes with the right SHA-256 and is processed (by the in-process queue of the
host that completed it)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.cluster import redis_database
from tests.conftest import free_port, postgres_database
from tests.helpers import post_chunk, wait_for_video, wait_until
from tests.storage.swift import keys_in, raw_client, s3_env
from vidgate.config import all_env_names

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

MIB = 1 << 20
TUS = {"Tus-Resumable": "1.0.0"}


def _env(**more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in all_env_names() and not k.startswith("AWS_")}
    env.update(AUTH_CREATE_DEV_KEY="false", VIDGATE_LOG_LEVEL="info", **more)
    return env


@dataclass
class Host:
    url: str
    log: Path
    env: dict[str, str]
    port: int
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "vidgate", "serve", "--port", str(self.port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            assert self.process.poll() is None and time.monotonic() < deadline, self.log.read_text()[-3000:]
            time.sleep(0.2)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=20)


@dataclass
class Cluster:
    hosts: list[Host]
    key: str
    bucket: str
    prefix: str
    clients: list[httpx.Client] = field(default_factory=list)

    def leftovers(self) -> tuple[list[str], list[str]]:
        """Objects and multipart uploads of uploads in progress still in the bucket."""
        uploads = f"{self.prefix}uploads/"
        pending = raw_client().list_multipart_uploads(Bucket=self.bucket, Prefix=uploads).get("Uploads", [])
        return keys_in(self.bucket, uploads), [u["Key"] for u in pending]


@pytest.fixture(scope="module")
def cluster(swift: str, bucket: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Started once for the module (each test has uploads of its own); both hosts at once."""
    tmp_path = tmp_path_factory.mktemp("two-hosts")
    prefix = f"hosts-{uuid.uuid4().hex[:8]}/"
    with postgres_database() as url, redis_database() as redis_url:
        common = {
            **s3_env(bucket, prefix),
            "DATABASE_URL": url,
            "UPLOAD_LOCKS": "redis",
            "WEBSOCKET_BUS": "redis",
            "WEBSOCKET_REDIS_URL": redis_url,
            "CELERY_BROKER_URL": redis_url,
            "STORAGE_S3_PART_SIZE": str(5 * MIB),
        }
        hosts = []
        for name in ("a", "b"):
            directory = tmp_path / name
            env = _env(**common, VIDGATE_DATA_DIR=str(directory), STORAGE_DIR=str(directory / "storage"))
            port = free_port()
            hosts.append(Host(f"http://127.0.0.1:{port}", tmp_path / f"{name}.log", env, port))
        subprocess.run([sys.executable, "-m", "vidgate", "migrate"], env=hosts[0].env, check=True, capture_output=True)
        key = subprocess.run(
            [sys.executable, "-m", "vidgate", "keys", "create", "--user", "alice"],
            env=hosts[0].env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        running = Cluster(hosts, key, bucket, prefix)
        try:
            starting = [threading.Thread(target=host.start) for host in hosts]
            for thread in starting:
                thread.start()
            for thread in starting:
                thread.join()
            for host in hosts:
                assert host.process is not None and host.process.poll() is None, host.log.read_text()[-3000:]
                running.clients.append(httpx.Client(base_url=host.url, headers={"X-API-Key": key}, timeout=60))
            yield running
        finally:
            for client in running.clients:
                client.close()
            for host in hosts:
                host.kill()


def _processed(cluster: Cluster, video_id: str) -> None:
    video = wait_for_video(cluster.clients[1], video_id, 60)
    logs = "".join(host.log.read_text()[-2000:] for host in cluster.hosts)
    assert video["status"] == "completed", (video, logs)


def test_seed_chunks_alternating_hosts_in_parallel(cluster: Cluster, big_video: bytes) -> None:
    """Chunks of 5 MiB (each a part) sent two at a time, to alternating hosts, last ones first."""
    data = big_video
    digest = hashlib.sha256(data).hexdigest()
    chunk_size = 5 * MIB
    chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]
    session = f"two-hosts-{uuid.uuid4().hex[:8]}"
    answers: dict[int, httpx.Response] = {}

    def send(index: int) -> None:
        answers[index] = post_chunk(
            cluster.clients[index % 2],
            chunks[index],
            session_id=session,
            chunk_index=index,
            total_chunks=len(chunks),
            chunk_size=chunk_size,
            file_hash=digest,
            filename="clip.mkv",
            content_type="video/x-matroska",
        )

    order = list(reversed(range(len(chunks))))
    for first in range(0, len(order), 2):
        threads = [threading.Thread(target=send, args=(index,)) for index in order[first : first + 2]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert all(answer.status_code == 200 for answer in answers.values()), [a.text for a in answers.values()]
    final = answers[order[-1]].json()["data"]
    assert final["status"] == "completed" and final["content_hash"] == digest, final
    _processed(cluster, final["video_id"])
    assert f"{cluster.prefix}blobs/{digest[:2]}/{digest}" in keys_in(cluster.bucket, cluster.prefix)
    wait_until(lambda: cluster.leftovers() == ([], []))  # staging object, multipart upload: gone (in the background)
    for host in cluster.hosts:  # no host kept the file
        storage = Path(host.env["STORAGE_DIR"])
        assert not [p for p in storage.rglob("*") if p.is_file() and p.stat().st_size > MIB]


def _create_tus(client: httpx.Client, length: int) -> str:
    name = base64.b64encode(b"clip.mkv").decode()
    created = client.post(
        "/v1/tus/", headers={**TUS, "Upload-Length": str(length), "Upload-Metadata": f"filename {name}"}
    )
    assert created.status_code == 201, created.text
    return created.headers["Location"].rsplit("/", 1)[-1]


def _patch(client: httpx.Client, upload: str, offset: int, body: bytes) -> httpx.Response:
    return client.patch(
        f"/v1/tus/{upload}",
        content=body,
        headers={**TUS, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"},
    )


def test_tus_patches_alternating_hosts(cluster: Cluster, big_video: bytes) -> None:
    """PATCHes of 3 MiB (each leaves a rest under 5 MiB, prepended by the next, on the other host)."""
    data = big_video
    digest = hashlib.sha256(data).hexdigest()
    upload = _create_tus(cluster.clients[0], len(data))
    offset, turn = 0, 0
    answer = None
    while offset < len(data):
        body = data[offset : offset + 3 * MIB]
        answer = _patch(cluster.clients[turn % 2], upload, offset, body)
        assert answer.status_code == 204, answer.text
        offset = int(answer.headers["Upload-Offset"])
        turn += 1
    assert answer is not None and answer.headers.get("Vidgate-Content-Hash") == digest, answer.headers
    video_id = answer.headers.get("Vidgate-Video-Id")
    if video_id:
        _processed(cluster, video_id)
    wait_until(lambda: cluster.leftovers() == ([], []))


def test_a_host_killed_mid_request_loses_nothing_acknowledged(cluster: Cluster, big_video: bytes) -> None:
    data = big_video
    digest = hashlib.sha256(data).hexdigest()
    a, b = cluster.clients
    upload = _create_tus(a, len(data))
    first = _patch(a, upload, 0, data[: 4 * MIB])  # acknowledged by host a
    assert first.status_code == 204 and first.headers["Upload-Offset"] == str(4 * MIB)
    sent = threading.Event()

    def slow_body() -> Iterator[bytes]:
        for start in range(4 * MIB, 10 * MIB, MIB):
            yield data[start : start + MIB]
            if start >= 6 * MIB:
                sent.set()
                time.sleep(0.5)

    def doomed() -> None:
        with contextlib.suppress(httpx.HTTPError):
            a.patch(
                f"/v1/tus/{upload}",
                content=slow_body(),
                headers={**TUS, "Upload-Offset": str(4 * MIB), "Content-Type": "application/offset+octet-stream"},
            )

    thread = threading.Thread(target=doomed)
    thread.start()
    assert sent.wait(30)
    cluster.hosts[0].kill()  # SIGKILL, in the middle of the body
    thread.join(30)
    restart = threading.Thread(target=cluster.hosts[0].start)  # back for the module's other tests
    restart.start()
    head = b.head(f"/v1/tus/{upload}", headers=TUS)
    assert head.status_code == 200
    offset = int(head.headers["Upload-Offset"])
    assert offset == 4 * MIB  # what a acknowledged, not what it was receiving
    deadline = time.monotonic() + 45  # a's Redis lock on the upload lapses (30 s lease)
    while offset < len(data):
        answer = _patch(b, upload, offset, data[offset : offset + 4 * MIB])
        if answer.status_code == 423:
            assert time.monotonic() < deadline, "the dead host's lock never lapsed"
            time.sleep(1)
            continue
        assert answer.status_code == 204, answer.text
        offset = int(answer.headers["Upload-Offset"])
    assert answer.headers.get("Vidgate-Content-Hash") == digest
    restart.join()


def test_parallel_tus_concatenation_across_hosts(cluster: Cluster, big_video: bytes) -> None:
    """tus-js-client's parallelUploads: partial uploads sent at once, one per host, then the
    final upload made of them (server-side copies of the completed partials) on either host."""
    data = big_video
    digest = hashlib.sha256(data).hexdigest()
    cut = 6 * MIB  # the first partial is a part's worth (copied), the second the rest
    pieces = [data[:cut], data[cut:]]
    urls: list[str] = []
    for index, piece in enumerate(pieces):
        created = cluster.clients[index].post(
            "/v1/tus/", headers={**TUS, "Upload-Length": str(len(piece)), "Upload-Concat": "partial"}
        )
        assert created.status_code == 201, created.text
        urls.append(httpx.URL(created.headers["Location"]).path)
    answers: list[httpx.Response] = []

    def send(index: int) -> None:
        answers.append(_patch(cluster.clients[index], urls[index].rsplit("/", 1)[-1], 0, pieces[index]))

    threads = [threading.Thread(target=send, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a.status_code for a in answers] == [204, 204], [a.text for a in answers]
    name = base64.b64encode(b"joined.mkv").decode()
    final = cluster.clients[1].post(
        "/v1/tus/",
        headers={**TUS, "Upload-Concat": "final;" + " ".join(urls), "Upload-Metadata": f"filename {name}"},
    )
    assert final.status_code == 201, final.text
    assert final.headers["Vidgate-Content-Hash"] == digest
    _processed(cluster, final.headers["Vidgate-Video-Id"])
    wait_until(lambda: cluster.leftovers() == ([], []))
