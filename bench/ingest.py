"""Ingest speed of the seed upload API against the bare stack, in one run, one table.

    .venv/bin/python bench/ingest.py [--size-mib 256] [--runs 5]

Uploads the same generated real video (raw frames in Matroska, written by PyAV) over
loopback to:
  baseline      a bare FastAPI app under the same uvicorn (httptools + uvloop) that reads
                the body and discards it: the ceiling of our stack;
  single        vidgate, the whole file in one multipart POST;
  chunked x1    vidgate, 10 MiB chunks one after another;
  chunked x4    vidgate, 10 MiB chunks, 4 in flight.
Each run starts a fresh server with empty storage after `sync`. Prints the median MB/s,
the ratio to the baseline, the server's peak RSS growth and the bytes it wrote to and read
from disk per uploaded byte (from /proc/PID/io). vidgate also verifies SHA-256 of every
chunk and of the whole file; the baseline does nothing.

Peers (tuspyserver, tussi, @tus/server) join this table in the benchmark issue.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIECE = 1 << 20


def make_video(path: Path, size_mib: int) -> Path:
    """Raw RGB frames in Matroska: a real video that is as large as asked, quickly."""
    import av
    import numpy as np

    width, height = 1280, 720
    frame_bytes = width * height * 3 // 2  # yuv420p
    frames = max(1, size_mib * (1 << 20) // frame_bytes)
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("rawvideo", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        base = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        for index in range(frames):
            image = np.roll(base, index, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    key: str
    rss_at_start: int

    def proc(self, name: str) -> str:
        return Path(f"/proc/{self.process.pid}/{name}").read_text()

    def io(self) -> dict[str, int]:
        return {k: int(v) for k, v in (line.split(": ") for line in self.proc("io").splitlines())}

    def peak_rss(self) -> int:
        return _status_kib(self.proc("status"), "VmHWM") * 1024


def _status_kib(status: str, field: str) -> int:
    for line in status.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def start_server(kind: str, workdir: Path) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UPLOAD_", "VIDGATE_", "DATABASE_", "STORAGE_"))}
    key = ""
    if kind == "baseline":
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "baseline_app:app",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--log-level",
            "warning",
        ]
        cwd = Path(__file__).parent
    else:
        env["VIDGATE_DATA_DIR"] = str(workdir)
        env["AUTH_CREATE_DEV_KEY"] = "false"
        env["VIDGATE_LOG_LEVEL"] = "warning"
        vidgate = [sys.executable, "-m", "vidgate"]
        created = subprocess.run(
            [*vidgate, "keys", "create", "--user", "bench"], env=env, capture_output=True, text=True, check=True
        )
        key = created.stdout.strip()
        command = [*vidgate, "serve", "--port", str(port)]
        cwd = workdir
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                break
        except OSError:
            time.sleep(0.05)
    else:
        process.kill()
        raise RuntimeError(f"{kind} server did not start")
    rss = _status_kib(Path(f"/proc/{process.pid}/status").read_text(), "VmRSS") * 1024
    return Server(process, port, key, rss)


def multipart_post(server: Server, path: Path, offset: int, length: int, fields: dict[str, str]) -> dict[str, object]:
    """POST bytes [offset, offset+length) of ``path`` as the file part, streamed from disk."""
    boundary = uuid.uuid4().hex
    head = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        "Content-Type: video/x-matroska\r\n\r\n"
    )
    tail = f"\r\n--{boundary}--\r\n".encode()
    head_bytes = head.encode()

    def body() -> Iterator[bytes]:
        yield head_bytes
        with path.open("rb") as handle:
            position = offset
            end = offset + length
            while position < end:
                piece = os.pread(handle.fileno(), min(PIECE, end - position), position)
                position += len(piece)
                yield piece
        yield tail

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
    headers = {
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(len(head_bytes) + length + len(tail)),
    }
    if server.key:
        headers["X-API-Key"] = server.key
    conn.request("POST", "/v1/upload/video", body=body(), headers=headers)
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"upload failed: {response.status} {payload[:300]!r}")
    result: dict[str, object] = json.loads(payload)
    return result


def upload(server: Server, path: Path, mode: str, chunk_size: int) -> dict[str, object]:
    size = path.stat().st_size
    if mode in ("baseline", "single"):
        return multipart_post(server, path, 0, size, {})
    total = -(-size // chunk_size)
    session_id = uuid.uuid4().hex
    common = {"session_id": session_id, "total_chunks": str(total), "chunk_size": str(chunk_size)}

    def send(index: int) -> dict[str, object]:
        offset = index * chunk_size
        return multipart_post(
            server, path, offset, min(chunk_size, size - offset), {**common, "chunk_index": str(index)}
        )

    parallel = 4 if mode == "chunked x4" else 1
    with ThreadPoolExecutor(parallel) as pool:
        results = list(pool.map(send, range(total)))
    final = [r for r in results if r["data"]["status"] == "completed"]  # type: ignore[index]
    assert len(final) == 1
    return final[0]


@dataclass
class Measurement:
    seconds: float
    rss_growth: int
    written: int
    read: int


def measure(kind: str, mode: str, path: Path, chunk_size: int, digest: str) -> Measurement:
    workdir = Path(tempfile.mkdtemp(prefix="vidgate-bench-"))
    try:
        subprocess.run(["sync"], check=True)
        server = start_server(kind, workdir)
        try:
            before = server.io()
            started = time.perf_counter()
            result = upload(server, path, mode, chunk_size)
            seconds = time.perf_counter() - started
            after = server.io()
            if kind != "baseline":
                assert result["data"]["content_hash"] == digest, result  # type: ignore[index]
            return Measurement(
                seconds=seconds,
                rss_growth=server.peak_rss() - server.rss_at_start,
                written=after["write_bytes"] - before["write_bytes"],
                read=after["read_bytes"] - before["read_bytes"],
            )
        finally:
            server.process.terminate()
            server.process.wait(timeout=20)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--chunk-mib", type=int, default=10)
    args = parser.parse_args()
    chunk_size = args.chunk_mib << 20

    with tempfile.TemporaryDirectory(prefix="vidgate-bench-media-") as media:
        path = make_video(Path(media) / "bench.mkv", args.size_mib)
        size = path.stat().st_size
        digest = hashlib.file_digest(path.open("rb"), "sha256").hexdigest()
        print(f"file: {size / 1e6:.1f} MB real video (rawvideo in Matroska), {args.runs} runs each, loopback\n")
        cases = [("baseline", "baseline"), ("vidgate", "single"), ("vidgate", "chunked x1"), ("vidgate", "chunked x4")]
        rows = []
        baseline_speed = None
        for kind, mode in cases:
            runs = [measure(kind, mode, path, chunk_size, digest) for _ in range(args.runs)]
            median = statistics.median(r.seconds for r in runs)
            speed = size / median / 1e6
            if kind == "baseline":
                baseline_speed = speed
            rows.append(
                (
                    f"{kind} {mode}" if kind != "baseline" else "baseline (read+discard)",
                    speed,
                    speed / baseline_speed if baseline_speed else 1.0,
                    max(r.rss_growth for r in runs) / (1 << 20),
                    statistics.median(r.written for r in runs) / size,
                    statistics.median(r.read for r in runs) / size,
                )
            )
        print(f"{'server':<28}{'MB/s':>9}{'x base':>9}{'peak RSS +MiB':>15}{'disk w/B':>10}{'disk r/B':>10}")
        for name, speed, ratio, rss, written, read in rows:
            print(f"{name:<28}{speed:>9.1f}{ratio:>9.2f}{rss:>15.1f}{written:>10.2f}{read:>10.2f}")


if __name__ == "__main__":
    main()
