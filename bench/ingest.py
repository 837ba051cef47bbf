"""Ingest speed of vidgate's upload APIs against the bare stack and the tus servers a user
would pick instead, in one run, one table.

    .venv/bin/python bench/ingest.py [--size-mib 256] [--runs 5] [--only tus,tussi,...]
    .venv/bin/python bench/ingest.py --many-clients [--clients 64] [--client-seconds 20] [--client-mib 4]

Uploads the same generated real video (raw frames in Matroska, written by PyAV) over
loopback to (keys for --only in brackets):
  baseline      [baseline]  a bare FastAPI app under the same uvicorn (httptools + uvloop)
                that reads the body and discards it: the ceiling of our stack;
  ceiling       [ceiling]   the same bare app, also hashing (SHA-256) and writing every byte
                to a file in worker threads (bench/hashwrite_app.py): the ceiling of any
                server that keeps and verifies what it receives, on this stack and machine;
  single        [single]    vidgate, the whole file in one multipart POST;
  chunked x1    [chunked1]  vidgate seed API, 10 MiB chunks one after another;
  chunked x4    [chunked4]  vidgate seed API, 10 MiB chunks, 4 in flight;
  tus           [tus]       vidgate's tus endpoint (/v1/tus/) with the tuspy client;
  peers         [tuspyserver, tussi, tus-node]  the same tuspy client and chunk size against
                tuspyserver and tussi (PyPI, each in its own venv under the same uvicorn with
                uvloop + httptools) and the Node reference server @tus/server with
                @tus/file-store (npm), each set up as its README shows, storing on local disk.
  S3 rows, against the machine's Swift with its S3 API (scripts/swift starts it; one bucket,
  a fresh key prefix per run):
  boto3 -> S3   [boto3-s3]  no server: a bare boto3 multipart upload of the file from disk
                (vidgate's part size and concurrency): the ceiling of this S3 server here;
  boto3 x1      [boto3-s3-x1]  the same with max_concurrency=1: one part at a time;
  forwarder     [tus-fwd-s3]  the ceiling of a server in front of this S3 (bench/s3_forward_app.py):
                the tus row's PATCHes forwarded as multipart parts while they arrive, with
                vidgate's botocore client, nothing hashed, validated or recorded; x ceil of the
                S3 rows is over it when it runs;
  vidgate on S3 [chunked1-s3, tus-s3]  vidgate with STORAGE_BACKEND=s3: uploads in progress
                are S3 multipart uploads, completed, validated by ranged GETs of the
                completed object and copied to the content's key server-side (inside the
                measured time: the last chunk/PATCH answers after it);
  vidgate on S3, local parts [chunked1-s3local, tus-s3local]  the same with STORAGE_PARTS=local:
                part files on local disk, the finished file copied into the bucket;
  @tus/s3-store [tus-node-s3]  @tus/server with @tus/s3-store (npm, bench/peers/s3-node, its
                package-lock.json; installed there with npm ci), every PATCH sent on to S3.
The peers are installed once into bench/.peers/ (git-ignored; delete it to reinstall), never
into the project's environment. The runs are interleaved (round r uploads to every server in
turn, backwards on odd rounds, starting one server later every second round: round_order);
each starts a fresh server with empty storage after `sync` (the storage of the servers before
is removed when the bench ends: see remove_at_the_end), warms it up with one 2 MiB
upload made the same way (for vidgate, also waiting until its analysis is done, so the
measured upload has the CPU to itself), syncs again and measures.
Prints the median MB/s, the ratio to the baseline, the ceiling and the best peer,
the CPU time the server and the client spent, the server process's peak RSS (and its growth
during the upload), and the bytes it wrote to and read from disk per uploaded byte (from
/proc/PID/io). Every server's result is checked: vidgate's content hash, the ceiling's and
the peers' stored file. A server that cannot be set up or fails gets a "not run"/"failed" row with the reason.

--many-clients prints another table instead (rows baseline, ceiling, single, tus, tuspyserver,
tussi, tus-node; --only picks among them): --clients clients at once, each uploading
--client-mib files one after another for --client-seconds, every upload with bytes of its own
(so vidgate's dedup never shortcuts one), every upload's SHA-256 checked; uploads/s, MB/s,
p50/p99 upload time, and each server's fixed cost of a small upload (see the table's notes).
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import http.client
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
PEERS_DIR = BENCH / ".peers"  # git-ignored: the peers' venvs and node_modules
PEER_SOURCES = BENCH / "peers"  # our few lines that set each peer up as its README shows
PIECE = 1 << 20
VIDEO_METADATA = {"filename": "bench.mkv", "filetype": "video/x-matroska"}

# The peers, pinned so that a table can be reproduced; the ASGI server (and the web framework
# where the peer uses one) is pinned to the versions vidgate runs on, so only the tus layer
# differs between the Python rows.
TUSPYSERVER = "tuspyserver==4.4.3"
TUSSI = "tussi==3.1.0"
NODE_PACKAGES = {"@tus/server": "2.4.5", "@tus/file-store": "2.1.1"}
S3_NODE_PEER = PEER_SOURCES / "s3-node"  # package.json + package-lock.json: @tus/server + @tus/s3-store
SWIFT_ENDPOINT = "http://127.0.0.1:16280"  # scripts/swift
S3_BUCKET = "vidgate-bench"
VIDGATE_S3 = ("vidgate-s3", "vidgate-s3-localparts")  # vidgate on S3: parts in the bucket, or on local disk
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test:tester", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
S3_PART_SIZE, S3_CONCURRENCY = 16 << 20, 4  # vidgate's defaults (STORAGE_S3_PART_SIZE, STORAGE_S3_CONCURRENCY)


def _same_as_ours(*names: str) -> list[str]:
    return [f"{name}=={metadata.version(name)}" for name in names]


PYTHON_PEERS: dict[str, list[str]] = {
    "tuspyserver": [TUSPYSERVER, *_same_as_ours("fastapi", "starlette", "uvicorn", "uvloop", "httptools")],
    "tussi": [TUSSI, *_same_as_ours("starlette", "uvicorn", "uvloop", "httptools")],
}


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


# --- the peers' environments --------------------------------------------------------------


class SetupFailed(Exception):
    """A peer could not be installed or started: its row says why."""


def _last_lines(text: str, count: int = 3) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-count:])[:300]


def ensure_python_peer(name: str) -> Path:
    """A venv of its own for ``name`` in bench/.peers/NAME, made once; its python."""
    venv = PEERS_DIR / name
    wanted = "\n".join(PYTHON_PEERS[name]) + "\n"
    marker = venv / "bench-requirements.txt"
    python = venv / "bin" / "python"
    if marker.exists() and marker.read_text() == wanted and python.exists():
        return python
    print(f"setting up {name} in {venv} (once) ...", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    base = shutil.which("python3") or sys.executable
    steps = [
        [base, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *PYTHON_PEERS[name]],
    ]
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired as exc:
            raise SetupFailed(f"{' '.join(step[:4])} timed out") from exc
        if done.returncode != 0:
            raise SetupFailed(f"{' '.join(step[:4])} failed: {_last_lines(done.stderr or done.stdout)}")
    marker.write_text(wanted)
    return python


def ensure_node_peer() -> Path:
    """bench/.peers/node with @tus/server and @tus/file-store, made once; its folder."""
    folder = PEERS_DIR / "node"
    package = json.dumps({"private": True, "dependencies": NODE_PACKAGES}, indent=2) + "\n"
    marker = folder / "bench-package.json"
    if marker.exists() and marker.read_text() == package and (folder / "node_modules" / "@tus" / "server").is_dir():
        return folder
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise SetupFailed("node and npm are not installed")
    print(f"setting up @tus/server in {folder} (once) ...", flush=True)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "package.json").write_text(package)
    try:
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund"], cwd=folder, capture_output=True, text=True, timeout=900
        )
    except subprocess.TimeoutExpired as exc:
        raise SetupFailed("npm install timed out") from exc
    if done.returncode != 0:
        raise SetupFailed(f"npm install failed: {_last_lines(done.stderr or done.stdout)}")
    marker.write_text(package)
    return folder


def ensure_swift() -> None:
    """Swift running (scripts/swift: installs and starts it if needed) and the bench's bucket."""
    done = subprocess.run([str(ROOT / "scripts" / "swift")], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SetupFailed(f"scripts/swift failed: {_last_lines(done.stderr or done.stdout)}")
    client = s3_client()
    try:
        client.head_bucket(Bucket=S3_BUCKET)
    except Exception:
        client.create_bucket(Bucket=S3_BUCKET)


def s3_client() -> object:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=SWIFT_ENDPOINT,
        aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            retries={"mode": "standard"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def s3_sha256(key: str) -> tuple[int, str]:
    """Size and SHA-256 of an object of the bench's bucket, streamed."""
    body = s3_client().get_object(Bucket=S3_BUCKET, Key=key)["Body"]  # type: ignore[attr-defined]
    digest, size = hashlib.sha256(), 0
    for piece in body.iter_chunks(PIECE):
        digest.update(piece)
        size += len(piece)
    return size, digest.hexdigest()


def ensure_node_s3_peer() -> Path:
    """bench/peers/s3-node/node_modules from its package-lock.json (npm ci), once."""
    if (S3_NODE_PEER / "node_modules" / "@tus" / "s3-store").is_dir():
        return S3_NODE_PEER
    npm = shutil.which("npm")
    if npm is None:
        raise SetupFailed("npm is not installed")
    done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=S3_NODE_PEER, capture_output=True, text=True)
    if done.returncode != 0:
        raise SetupFailed(f"npm ci failed: {_last_lines(done.stderr or done.stdout)}")
    return S3_NODE_PEER


def node_version() -> str:
    node = shutil.which("node")
    return subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip() if node else "?"


# --- servers --------------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    key: str
    rss_at_start: int
    tus_path: str
    stored: Callable[[str], Path]  # upload id -> where the server keeps the finished file
    s3_prefix: str = ""  # vidgate on S3: its STORAGE_S3_PREFIX

    def proc(self, name: str) -> str:
        return Path(f"/proc/{self.process.pid}/{name}").read_text()

    def io(self) -> dict[str, int]:
        """The process's I/O counters; the kernel adds in the children it has reaped."""
        return {k: int(v) for k, v in (line.split(": ") for line in self.proc("io").splitlines())}

    def peak_rss(self) -> int:
        return _status_kib(self.proc("status"), "VmHWM") * 1024

    def cpu_seconds(self) -> float:
        return self.cpu_split()[0]

    def cpu_split(self) -> tuple[float, float]:
        """CPU time (user + system) of the server and every process under it (vidgate's probe
        children run under its forkserver), counting children they have reaped; and of it the
        system time, from the same walk of the tree."""
        times = [_cpu_times(pid) for pid in _process_tree(self.process.pid)]
        return sum(total for total, _ in times), sum(kernel for _, kernel in times)

    @property
    def tus_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.tus_path}"


def _stat_fields(pid: int | str) -> list[str]:
    """The fields of /proc/PID/stat after the command name (field 3, state, comes first)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int(_stat_fields(entry.name)[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def _cpu_of(pid: int, *, reaped: bool = True) -> float:
    """utime + stime of ``pid`` in seconds (0 if it is gone), with ``reaped`` the children it has
    reaped too (cutime + cstime); without, the process alone (vidgate: the API process, not its
    probe children nor its analysis child)."""
    return _cpu_times(pid, reaped=reaped)[0]


def _cpu_times(pid: int, *, reaped: bool = True) -> tuple[float, float]:
    """:func:`_cpu_of`, and of it the system time (stime, and cstime with ``reaped``)."""
    try:
        fields = _stat_fields(pid)
    except OSError:
        return 0.0, 0.0
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    if not reaped:
        cutime = cstime = 0
    tick = os.sysconf("SC_CLK_TCK")
    return (utime + stime + cutime + cstime) / tick, (stime + cstime) / tick


def _client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _status_kib(status: str, field_name: str) -> int:
    for line in status.splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise KeyError(field_name)


@dataclass
class Launch:
    command: list[str]
    cwd: Path
    env: dict[str, str]
    ready: tuple[str, str]  # method and path that answer 2xx once the server is up
    key: str = ""
    tus_path: str = "/files/"
    stored: Callable[[str], Path] = field(default=lambda upload_id: Path())


def _uvicorn(python: str | Path, target: str, port: int) -> list[str]:
    return [
        str(python),
        "-m",
        "uvicorn",
        target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--log-level",
        "warning",
    ]


T = TypeVar("T")


def round_order(rows: Sequence[T], round_: int) -> list[T]:
    """The order of round ``round_``: a rotation that starts one row later every second round,
    backwards on odd rounds. What an upload leaves behind (its freed page cache, a busy CPU, a
    server still exiting) falls on a different row each round: with a rotation alone every row
    always followed the same one, and a run of the same sources twice (``--src X --compare-src
    X``) printed the second row 7-10 % faster."""
    start = (round_ // 2) % len(rows) if rows else 0
    order = [*rows[start:], *rows[:start]]
    return order[::-1] if round_ % 2 else order


def prepare(kind: str, workdir: Path, port: int, src: str = "") -> Launch:
    """How to start server ``kind`` on ``port`` with its storage in ``workdir`` (empty); vidgate
    from the sources in ``src`` when given (else what this process's environment imports)."""
    prefixes = ("UPLOAD_", "VIDGATE_", "DATABASE_", "STORAGE_", "PEER_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    if src:
        env["PYTHONPATH"] = src
    if kind == "baseline":
        return Launch(_uvicorn(sys.executable, "baseline_app:app", port), BENCH, env, ("GET", "/health"))
    if kind == "hashwrite":
        env["PEER_FILES_DIR"] = str(workdir)
        return Launch(_uvicorn(sys.executable, "hashwrite_app:app", port), BENCH, env, ("GET", "/health"))
    if kind in ("vidgate", *VIDGATE_S3):
        env["VIDGATE_DATA_DIR"] = str(workdir)
        if kind in VIDGATE_S3:
            env.update(S3_CREDENTIALS)
            env.update(
                STORAGE_BACKEND="s3",
                STORAGE_S3_ENDPOINT_URL=SWIFT_ENDPOINT,
                STORAGE_S3_BUCKET=S3_BUCKET,
                STORAGE_S3_PREFIX=f"bench-{uuid.uuid4().hex[:8]}/",
                STORAGE_S3_ADDRESSING_STYLE="path",
                # uploads in progress as S3 multipart uploads, or (phase 1) in local part files
                STORAGE_PARTS="local" if kind == "vidgate-s3-localparts" else "backend",
            )
        env["AUTH_CREATE_DEV_KEY"] = "false"
        env["VIDGATE_LOG_LEVEL"] = "warning"
        script = Path(sys.executable).parent / "vidgate"  # started the way users start it (scripts/serve)
        vidgate = [str(script)] if script.exists() else [sys.executable, "-m", "vidgate"]
        created = subprocess.run(
            [*vidgate, "keys", "create", "--user", "bench"], env=env, capture_output=True, text=True, check=True
        )
        command = [*vidgate, "serve", "--host", "127.0.0.1", "--port", str(port)]
        # /ready: up and warmed (its probe server started), as a load balancer would wait for
        return Launch(command, workdir, env, ("GET", "/ready"), key=created.stdout.strip(), tus_path="/v1/tus/")
    env["PEER_FILES_DIR"] = str(workdir)
    if kind == "tuspyserver":
        python = ensure_python_peer("tuspyserver")
        return Launch(
            _uvicorn(python, "tuspyserver_app:app", port),
            PEER_SOURCES,
            env,
            ("OPTIONS", "/files/"),
            stored=lambda upload_id: workdir / upload_id,
        )
    if kind == "tussi":
        python = ensure_python_peer("tussi")
        return Launch(
            _uvicorn(python, "tussi_app:tus", port),
            PEER_SOURCES,
            env,
            ("OPTIONS", "/files/"),
            stored=lambda upload_id: workdir / "completed" / upload_id,
        )
    if kind == "tus-node":
        folder = ensure_node_peer()
        shutil.copy(PEER_SOURCES / "tus_node_server.mjs", folder / "tus_node_server.mjs")
        node = shutil.which("node") or "node"
        return Launch(
            [node, "tus_node_server.mjs", str(port), str(workdir)],
            folder,
            env,
            ("OPTIONS", "/files"),
            tus_path="/files",
            stored=lambda upload_id: workdir / upload_id,
        )
    if kind == "s3forward":
        env.update(S3_CREDENTIALS, PEER_S3_BUCKET=S3_BUCKET, STORAGE_S3_ENDPOINT_URL=SWIFT_ENDPOINT)
        env.update(STORAGE_S3_ADDRESSING_STYLE="path", PYTHONPATH=os.pathsep.join([str(ROOT / "src"), *sys.path]))
        return Launch(_uvicorn(sys.executable, "s3_forward_app:app", port), BENCH, env, ("GET", "/health"))
    if kind == "tus-node-s3":
        folder = ensure_node_s3_peer()
        env.update(S3_CREDENTIALS, S3_ENDPOINT=SWIFT_ENDPOINT, S3_BUCKET=S3_BUCKET)
        node = shutil.which("node") or "node"
        return Launch(
            [node, "tus_node_s3_server.mjs", str(port)], folder, env, ("OPTIONS", "/files"), tus_path="/files"
        )
    raise ValueError(kind)


def start_server(kind: str, workdir: Path, src: str = "") -> Server:
    port = free_port()
    launch = prepare(kind, workdir, port, src)
    log = (workdir.parent / f"{workdir.name}.log").open("wb")
    process = subprocess.Popen(launch.command, env=launch.env, cwd=launch.cwd, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    method, path = launch.ready
    started = time.monotonic()
    deadline = started + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request(method, path, headers={"Tus-Resumable": "1.0.0"})
            status = conn.getresponse().status
            conn.close()
            if 200 <= status < 300:
                rss = _status_kib(Path(f"/proc/{process.pid}/status").read_text(), "VmRSS") * 1024
                prefix = launch.env.get("STORAGE_S3_PREFIX", "")
                return Server(process, port, launch.key, rss, launch.tus_path, launch.stored, prefix)
        except OSError:
            time.sleep(0.05)
    if process.poll() is None:
        process.kill()
    status = process.wait()
    output = (workdir.parent / f"{workdir.name}.log").read_text(errors="replace")
    waited = time.monotonic() - started
    raise SetupFailed(
        f"{kind} server did not start ({waited:.0f} s, exit {status}): {_last_lines(output) or 'no output'}"
    )


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


# --- uploads --------------------------------------------------------------------------------


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


def seed_upload(server: Server, path: Path, mode: str, chunk_size: int) -> dict[str, object]:
    size = path.stat().st_size
    if mode in ("baseline", "ceiling", "single"):
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


def tus_upload(server: Server, path: Path, chunk_size: int) -> tuple[str, dict[str, str]]:
    """tuspy's plain Uploader, the same settings for every server: no checksum, no retries.
    Returns the upload URL and the headers of the last PATCH's response."""
    from tusclient.client import TusClient

    client = TusClient(server.tus_url, headers={"X-API-Key": server.key} if server.key else {})
    uploader = client.uploader(file_path=str(path), chunk_size=chunk_size, metadata=VIDEO_METADATA)
    uploader.upload()
    if uploader.offset != path.stat().st_size:
        raise RuntimeError(f"tuspy stopped at offset {uploader.offset}")
    return str(uploader.url), dict(uploader.request.response_headers)


# A server's storage is removed when the bench ends, not before the next server starts: on ext4
# without a journal (this machine's), a new inode skips every inode deleted in the last
# dirty_expire_centisecs (30 s), so the thousands of files of the row before made every file the
# next row created scan past them (perf: 5.4 % of vidgate's API CPU under 64 clients right after
# a row's ~4,500 files were deleted, 0.1 % after a row of a few). Kept while the disk has room.
KEEP_FREE_BYTES = 16 << 30
_LEFT_FOR_THE_END: list[Path] = []


def remove_at_the_end(root: Path) -> None:
    """Remove ``root`` (a measured server's storage) when the bench ends, or now if the disk is short."""
    if shutil.disk_usage(root).free < KEEP_FREE_BYTES:
        shutil.rmtree(root, ignore_errors=True)
        return
    if not _LEFT_FOR_THE_END:
        atexit.register(_remove_what_was_left)
    _LEFT_FOR_THE_END.append(root)


def _remove_what_was_left() -> None:
    for root in _LEFT_FOR_THE_END:
        shutil.rmtree(root, ignore_errors=True)


def sha256_of(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


# --- measuring ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    kind: str  # which server
    mode: str  # how the client uploads: baseline, ceiling, single, chunked x1, chunked x4, tus
    src: str = ""  # vidgate: the sources it runs (PYTHONPATH), "" for the ones this process would import

    @property
    def is_peer(self) -> bool:
        return self.kind not in ("baseline", "hashwrite", "vidgate", *VIDGATE_S3, "boto3", "s3forward")

    @property
    def is_vidgate(self) -> bool:
        return self.kind in ("vidgate", *VIDGATE_S3)

    @property
    def on_s3(self) -> bool:
        return self.kind in (*VIDGATE_S3, "tus-node-s3", "boto3", "s3forward")


CASES = [
    Case("baseline", "baseline (read+discard)", "baseline", "baseline"),
    Case("ceiling", "bare + SHA-256 + write", "hashwrite", "ceiling"),
    Case("single", "vidgate single POST", "vidgate", "single"),
    Case("chunked1", "vidgate seed chunked x1", "vidgate", "chunked x1"),
    Case("chunked4", "vidgate seed chunked x4", "vidgate", "chunked x4"),
    Case("tus", "vidgate tus", "vidgate", "tus"),
    Case("tuspyserver", f"tuspyserver {TUSPYSERVER.split('==')[1]}", "tuspyserver", "tus"),
    Case("tussi", f"tussi {TUSSI.split('==')[1]}", "tussi", "tus"),
    Case("tus-node", f"@tus/server {NODE_PACKAGES['@tus/server']}", "tus-node", "tus"),
    Case("boto3-s3", "S3: bare boto3 multipart", "boto3", "boto3"),
    Case("boto3-s3-x1", "S3: bare boto3, 1 part at a time", "boto3", "boto3 x1"),
    Case("tus-fwd-s3", "S3: bare forwarder", "s3forward", "tus"),
    Case("chunked1-s3", "S3: vidgate seed chunked x1", "vidgate-s3", "chunked x1"),
    Case("tus-s3", "S3: vidgate tus", "vidgate-s3", "tus"),
    Case("chunked1-s3local", "S3: vidgate seed x1, local parts", "vidgate-s3-localparts", "chunked x1"),
    Case("tus-s3local", "S3: vidgate tus, local parts", "vidgate-s3-localparts", "tus"),
    Case("tus-node-s3", "S3: @tus/s3-store 2.0.7", "tus-node-s3", "tus"),
]


@dataclass
class Measurement:
    seconds: float
    peak_rss: int
    rss_growth: int
    written: int
    read: int
    server_cpu: float
    client_cpu: float
    tree_rss: int = 0  # VmRSS of the server and every process under it, right after the upload
    route_seconds: float | None = None  # vidgate: its time in its routes for the upload


def upload(server: Server, case: Case, path: Path, chunk_size: int) -> tuple[str, dict[str, str], dict[str, object]]:
    """One upload the way ``case`` uploads: (tus URL, last tus response headers, seed result)."""
    if case.mode == "tus":
        url, headers = tus_upload(server, path, chunk_size)
        return url, headers, {}
    return "", {}, seed_upload(server, path, case.mode, chunk_size)


def wait_until_processed(server: Server, video_id: str, timeout: float = 120) -> None:
    """vidgate analyses a stored video while the server runs (in its analysis child): wait for
    it so that the measured upload does not share the CPU with the warm-up's processing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", f"/v1/videos/{video_id}", headers={"X-API-Key": server.key})
        video = json.loads(conn.getresponse().read())["data"]
        conn.close()
        if video["status"] in ("completed", "failed"):
            return
        time.sleep(0.1)
    raise RuntimeError(f"the warm-up video {video_id} was not processed within {timeout} s")


def warm_up(server: Server, case: Case, warm_path: Path, chunk_size: int) -> None:
    """One small upload before the measured one, the same for every server, so every row
    measures a server in its steady state (code paths run, statements compiled, pools
    started) rather than its first request after start-up."""
    _, headers, result = upload(server, case, warm_path, chunk_size)
    if case.is_vidgate:
        video_id = headers.get("vidgate-video-id") or result["data"]["video_id"]  # type: ignore[index]
        wait_until_processed(server, str(video_id))


def measure_boto3(path: Path, digest: str, concurrency: int = S3_CONCURRENCY) -> Measurement:
    """The S3 ceiling: this process uploads the file with boto3 (no server in between)."""
    from boto3.s3.transfer import TransferConfig

    client = s3_client()
    key = f"bench-boto3-{uuid.uuid4().hex[:8]}"
    config = TransferConfig(
        multipart_threshold=S3_PART_SIZE, multipart_chunksize=S3_PART_SIZE, max_concurrency=concurrency
    )
    rss_before = _status_kib(Path("/proc/self/status").read_text(), "VmRSS") * 1024
    cpu_before = _client_cpu()
    started = time.perf_counter()
    client.upload_file(str(path), S3_BUCKET, key, Config=config)  # type: ignore[attr-defined]
    seconds = time.perf_counter() - started
    cpu = _client_cpu() - cpu_before
    peak = _status_kib(Path("/proc/self/status").read_text(), "VmHWM") * 1024
    assert s3_sha256(key) == (path.stat().st_size, digest), "boto3: stored object differs"
    client.delete_object(Bucket=S3_BUCKET, Key=key)  # type: ignore[attr-defined]
    return Measurement(seconds, peak, max(0, peak - rss_before), 0, 0, 0.0, cpu)


def measure(
    case: Case, path: Path, warm_path: Path, chunk_size: int, digest: str, profile: Path | None = None
) -> Measurement:
    if case.kind == "boto3":
        return measure_boto3(path, digest, 1 if case.mode == "boto3 x1" else S3_CONCURRENCY)
    root = Path(tempfile.mkdtemp(prefix="vidgate-bench-"))
    workdir = root / "data"
    workdir.mkdir()
    try:
        subprocess.run(["sync"], check=True)
        server = start_server(case.kind, workdir, case.src)
        spy = None
        try:
            warm_up(server, case, warm_path, chunk_size)
            subprocess.run(["sync"], check=True)
            server.rss_at_start = _status_kib(server.proc("status"), "VmRSS") * 1024
            if profile is not None:
                py_spy = [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw"]
                spy = subprocess.Popen(
                    [*py_spy, "--threads", "--nonblocking", "--pid", str(server.process.pid), "-o", str(profile)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(1)
            routes_before = _server_seconds(server) if case.is_vidgate else 0.0
            before = server.io()
            cpu_before = server.cpu_seconds(), _client_cpu()
            started = time.perf_counter()
            url, headers, result = upload(server, case, path, chunk_size)
            seconds = time.perf_counter() - started
            cpu_after = server.cpu_seconds(), _client_cpu()
            after = server.io()
            route_seconds = _server_seconds(server) - routes_before if case.is_vidgate else None
            measurement = Measurement(
                seconds=seconds,
                peak_rss=server.peak_rss(),
                rss_growth=server.peak_rss() - server.rss_at_start,
                written=after["write_bytes"] - before["write_bytes"],
                read=after["read_bytes"] - before["read_bytes"],
                server_cpu=cpu_after[0] - cpu_before[0],
                client_cpu=cpu_after[1] - cpu_before[1],
                tree_rss=_tree_rss(server),
                route_seconds=route_seconds,
            )
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(timeout=60)
            # check the outcome, outside the timing
            if case.is_vidgate and case.mode == "tus":
                got = headers.get("vidgate-content-hash")
                assert got == digest, f"vidgate tus: content hash {got} != {digest}"
            elif case.is_vidgate:
                got = result["data"]["content_hash"]  # type: ignore[index]
                assert got == digest, f"vidgate {case.mode}: content hash {got} != {digest}"
            if case.kind in VIDGATE_S3:
                prefix = server.s3_prefix
                stored_size, stored_hash = s3_sha256(f"{prefix}blobs/{digest[:2]}/{digest}")
                assert (stored_size, stored_hash) == (path.stat().st_size, digest), "vidgate s3: object differs"
            elif case.kind in ("tus-node-s3", "s3forward"):
                stored_size, stored_hash = s3_sha256(url.rstrip("/").rsplit("/", 1)[-1])
                assert (stored_size, stored_hash) == (path.stat().st_size, digest), f"{case.kind}: object differs"
            elif case.kind == "hashwrite":
                kept = Path(str(result["path"]))
                assert kept.stat().st_size == result["received"], "ceiling: stored size differs"
                assert sha256_of(kept) == result["sha256"], "ceiling: stored bytes differ from their hash"
            elif case.is_peer and not case.on_s3:
                stored = server.stored(url.rstrip("/").rsplit("/", 1)[-1])
                assert stored.is_file(), f"{case.kind}: no file at {stored}"
                assert sha256_of(stored) == digest, f"{case.kind}: stored file differs"
            return measurement
        finally:
            if spy is not None and spy.poll() is None:
                spy.kill()
                spy.wait()
            stop_server(server)
            if case.on_s3:
                empty_bucket()
    finally:
        remove_at_the_end(root)


def empty_bucket() -> None:
    """Delete what a run left in the bench's bucket (objects and unfinished multipart uploads)."""
    client: Any = s3_client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=S3_BUCKET):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=S3_BUCKET, Key=item["Key"])
    for upload in client.list_multipart_uploads(Bucket=S3_BUCKET).get("Uploads", []):
        client.abort_multipart_upload(Bucket=S3_BUCKET, Key=upload["Key"], UploadId=upload["UploadId"])


# --- many clients ---------------------------------------------------------------------------
# ``--many-clients``: N clients at once, each uploading one file after another for a fixed time,
# every upload with content of its own (TOKEN bytes in the middle of a frame's payload replaced,
# so the video stays valid and vidgate's dedup never shortcuts an upload). The client is asyncio
# on uvloop with plain HTTP/1.1, one connection per request (as tuspy, which uses requests
# without a session), making exactly tuspy's requests for tus: the creation POST (Upload-Length,
# Upload-Metadata), then one PATCH of the whole file (a file smaller than the chunk size).

TOKEN = 16  # bytes of each upload that are its own
FIXED_COST_UPLOADS = 20  # sequential small uploads per server for the fixed-cost column
SMALL_SIZE = (96, 64, 10)  # width, height, frames of the small upload (rawvideo: ~92 KB)
MANY_CASES = ("baseline", "ceiling", "single", "tus", "tuspyserver", "tussi", "tus-node")


@dataclass
class Variant:
    """A file held by the client whose TOKEN bytes at ``offset`` differ per upload."""

    data: bytes
    offset: int
    prefix: Any  # SHA-256 state over data[:offset]

    def digest(self, token: bytes) -> str:
        hasher = self.prefix.copy()
        hasher.update(token)
        hasher.update(memoryview(self.data)[self.offset + TOKEN :])
        return str(hasher.hexdigest())

    def pieces(self, token: bytes) -> list[bytes | memoryview]:
        view = memoryview(self.data)
        return [view[: self.offset], token, view[self.offset + TOKEN :]]


def make_variant(path: Path) -> Variant:
    """The file, and an offset in the middle of its middle packet's payload (PyAV says where
    the packets are), so that replacing TOKEN bytes there keeps every header intact."""
    import av

    data = path.read_bytes()
    with av.open(str(path)) as container:
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size and p.pos is not None and p.pos >= 0]
    position, size = packets[len(packets) // 2]
    offset = position + size // 2
    assert position + 64 < offset and offset + TOKEN < position + size, "no room for the token in a packet"
    prefix = hashlib.sha256(memoryview(data)[:offset])
    return Variant(data, offset, prefix)


def make_small_video(path: Path) -> Path:
    import av
    import numpy as np

    width, height, frames = SMALL_SIZE
    rng = np.random.default_rng(1)
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("rawvideo", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(frames):
            image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@dataclass
class Done:
    token: bytes
    started: float
    ended: float
    upload_id: str  # the tus upload's id, the ceiling's stored path, vidgate's video id
    reported: str  # the hash the server answered with (vidgate, ceiling), else ""


async def _http(
    port: int, method: str, target: str, headers: dict[str, str], body: list[bytes | memoryview]
) -> tuple[int, dict[str, str], bytes]:
    """One request on a connection of its own (``Connection: close``: the answer ends at EOF)."""
    import asyncio

    length = sum(len(piece) for piece in body)
    head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    head += f"Content-Length: {length}\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode())
        for piece in body:
            writer.write(piece)
            await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
    end = answer.find(b"\r\n\r\n")
    if end < 0:
        raise RuntimeError(f"{method} {target}: no complete answer ({len(answer)} bytes)")
    lines = answer[:end].decode("latin-1").split("\r\n")
    fields = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), fields, answer[end + 4 :]


async def upload_once(server: Server, mode: str, variant: Variant, token: bytes) -> tuple[str, str]:
    """One upload of ``variant`` with ``token``: (upload id, hash the server reported)."""
    auth = {"X-API-Key": server.key} if server.key else {}
    pieces = variant.pieces(token)
    if mode in ("single", "baseline", "ceiling"):
        boundary = uuid.uuid4().hex
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="bench.mkv"\r\n'
            "Content-Type: video/x-matroska\r\n\r\n"
        ).encode()
        body = [head, *pieces, f"\r\n--{boundary}--\r\n".encode()]
        content_type = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        status, _, payload = await _http(server.port, "POST", "/v1/upload/video", {**auth, **content_type}, body)
        if status != 200:
            raise RuntimeError(f"POST: {status} {payload[:200]!r}")
        answer = json.loads(payload)
        if mode == "ceiling":
            return str(answer["path"]), str(answer["sha256"])
        if mode == "baseline":
            return "", ""
        return str(answer["data"]["video_id"]), str(answer["data"]["content_hash"])
    import base64

    metadata = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in VIDEO_METADATA.items())
    creation = {**auth, "Tus-Resumable": "1.0.0", "Upload-Length": str(len(variant.data)), "Upload-Metadata": metadata}
    status, fields, payload = await _http(server.port, "POST", server.tus_path, creation, [])
    if status != 201 or "location" not in fields:
        raise RuntimeError(f"tus creation: {status} {payload[:200]!r}")
    location = fields["location"]
    target = "/" + location.split("://", 1)[1].split("/", 1)[1] if "://" in location else location
    patch = {
        **auth,
        "Tus-Resumable": "1.0.0",
        "Upload-Offset": "0",
        "Content-Type": "application/offset+octet-stream",
    }
    status, fields, payload = await _http(server.port, "PATCH", target, patch, pieces)
    if status != 204 or int(fields.get("upload-offset", -1)) != len(variant.data):
        raise RuntimeError(f"tus PATCH: {status} offset {fields.get('upload-offset')} {payload[:200]!r}")
    return target.rstrip("/").rsplit("/", 1)[-1], fields.get("vidgate-content-hash", "")


def _run_clients(
    clients: int, work: Callable[[bytes], Any], *, seconds: float = float("inf"), count: int | None = None
) -> tuple[list[Done], list[str], float]:
    """``clients`` coroutines uploading one after another until ``seconds`` passed (or each made
    ``count`` uploads): what was done, the errors, and the wall time from the start to the last answer."""
    import asyncio

    import uvloop

    done: list[Done] = []
    errors: list[str] = []

    async def client(deadline: float) -> None:
        made = 0
        while time.perf_counter() < deadline and (count is None or made < count):
            made += 1
            token = os.urandom(TOKEN)
            started = time.perf_counter()
            try:
                upload_id, reported = await work(token)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                continue
            done.append(Done(token, started, time.perf_counter(), upload_id, reported))

    async def everyone() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(client(started + seconds) for _ in range(clients)))
        return started

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        started = runner.run(everyone())
    wall = max((d.ended for d in done), default=time.perf_counter()) - started
    return done, errors, wall


def _server_seconds(server: Server) -> float:
    """vidgate's own time in its HTTP routes so far (the sum of its request-duration histogram,
    /metrics excluded): from the route's call (headers parsed) to its answer sent."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("vidgate_http_request_duration_seconds_sum{") and 'route="/metrics"' not in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


@dataclass
class ManyResult:
    uploads: int
    wall: float
    latencies: list[float]
    small_median: float  # seconds, sequential small uploads
    server_small: float | None  # vidgate: its own route time per small upload (median)
    peak_rss: int
    tree_rss: int
    written: int
    read: int
    server_cpu: float
    client_cpu: float
    own_cpu: float  # the server process alone (vidgate: the API process), without its children
    server_kernel: float  # of server_cpu, the time in the kernel (stime)
    backlog: int | None = None  # vidgate: videos still queued or processing when the clients stopped


def _tree_rss(server: Server) -> int:
    total = 0
    for pid in _process_tree(server.process.pid):
        try:
            total += _status_kib(Path(f"/proc/{pid}/status").read_text(), "VmRSS") * 1024
        except (OSError, KeyError):
            continue
    return total


def _backlog(server: Server) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("vidgate_processing_queue_length")
    )


def _wait_for_no_backlog(server: Server, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while _backlog(server):
        if time.monotonic() > deadline:
            raise RuntimeError(f"vidgate's analyses did not finish within {timeout:.0f} s")
        time.sleep(0.05)


def _check_many(case: Case, server: Server, variant: Variant, done: list[Done]) -> None:
    """Every upload's content hash: the one vidgate answered, the stored file's for the peers (the
    ceiling: its stored body against the hash it answered, holding the bytes sent)."""
    for item in done:
        expected = variant.digest(item.token)
        if case.is_vidgate:
            assert item.reported == expected, f"{case.key}: hash {item.reported} != {expected}"
        elif case.mode == "ceiling":  # it keeps (and hashes) the whole request body, multipart framing too
            kept = Path(item.upload_id).read_bytes()
            assert hashlib.sha256(kept).hexdigest() == item.reported, f"ceiling: stored {item.upload_id} differs"
            assert variant.data[: variant.offset] in kept and item.token in kept, "ceiling: not the file sent"
        elif case.is_peer:
            stored = server.stored(item.upload_id)
            assert stored.is_file() and sha256_of(stored) == expected, f"{case.kind}: stored {stored} differs"


def measure_many(
    case: Case, variant: Variant, small: Variant, warm_path: Path, clients: int, seconds: float
) -> ManyResult:
    root = Path(tempfile.mkdtemp(prefix="vidgate-bench-"))
    workdir = root / "data"
    workdir.mkdir()
    mode = "single" if case.mode in ("single", "baseline", "ceiling") else "tus"
    try:
        subprocess.run(["sync"], check=True)
        server = start_server(case.kind, workdir, case.src)
        try:
            if case.kind not in ("baseline", "hashwrite"):
                warm_up(server, case, warm_path, 10 << 20)
            # the fixed cost: small uploads one after another, each on an idle server (vidgate: its
            # analysis done before the next), so their latency is the server's fixed cost alone
            small_mode = case.mode if mode == "single" else "tus"
            small_done: list[Done] = []
            own_seconds: list[float] = []
            for _ in range(FIXED_COST_UPLOADS):
                server_before = _server_seconds(server) if case.is_vidgate else 0.0
                done, errors, _ = _run_clients(1, lambda token: upload_once(server, small_mode, small, token), count=1)
                if errors:
                    raise RuntimeError(f"small uploads failed: {errors[0]}")
                small_done += done
                if case.is_vidgate:
                    own_seconds.append(_server_seconds(server) - server_before)
                    _wait_for_no_backlog(server)
            server_small = statistics.median(own_seconds) if own_seconds else None
            _check_many(case, server, small, small_done)
            subprocess.run(["sync"], check=True)
            before = server.io()
            tree_before, kernel_before = server.cpu_split()
            cpu_before = tree_before, _client_cpu(), _cpu_of(server.process.pid, reaped=False)
            done, errors, wall = _run_clients(
                clients, lambda token: upload_once(server, case.mode, variant, token), seconds=seconds
            )
            tree_after, kernel_after = server.cpu_split()
            cpu_after = tree_after, _client_cpu(), _cpu_of(server.process.pid, reaped=False)
            after = server.io()
            backlog = _backlog(server) if case.is_vidgate else None
            peak, tree = server.peak_rss(), _tree_rss(server)
            if errors:
                raise RuntimeError(f"{len(errors)} of {len(errors) + len(done)} uploads failed: {errors[0]}")
            _check_many(case, server, variant, done)
            return ManyResult(
                uploads=len(done),
                wall=wall,
                latencies=[d.ended - d.started for d in done],
                small_median=statistics.median(d.ended - d.started for d in small_done),
                server_small=server_small,
                peak_rss=peak,
                tree_rss=tree,
                written=after["write_bytes"] - before["write_bytes"],
                read=after["read_bytes"] - before["read_bytes"],
                server_cpu=cpu_after[0] - cpu_before[0],
                client_cpu=cpu_after[1] - cpu_before[1],
                own_cpu=cpu_after[2] - cpu_before[2],
                server_kernel=kernel_after - kernel_before,
                backlog=backlog,
            )
        finally:
            stop_server(server)
    finally:
        remove_at_the_end(root)


def bare_small_medians(small: Variant) -> dict[str, float]:
    """The bare stack's median time for the small upload, by protocol: what every server pays
    for the same requests before doing anything (subtracted for the fixed-cost column)."""
    root = Path(tempfile.mkdtemp(prefix="vidgate-bench-"))
    try:
        server = start_server("baseline", root)
        try:
            medians = {}
            for mode, flow in (("single", "baseline"), ("tus", "tus")):
                done, errors, _ = _run_clients(
                    1, lambda token, flow=flow: upload_once(server, flow, small, token), count=FIXED_COST_UPLOADS + 1
                )
                if errors:
                    raise RuntimeError(f"bare {mode}: {errors[0]}")
                medians[mode] = statistics.median(d.ended - d.started for d in done[1:])  # the first warms up
            return medians
        finally:
            stop_server(server)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def many_clients(args: argparse.Namespace, cases: list[Case]) -> None:
    """The many-clients table (see ``--many-clients``)."""
    rows: list[tuple[Case, list[ManyResult], str]] = []
    with tempfile.TemporaryDirectory(prefix="vidgate-bench-media-") as media:
        variant = make_variant(make_video(Path(media) / "many.mkv", args.client_mib))
        small = make_variant(make_small_video(Path(media) / "small.mkv"))
        warm_path = make_video(Path(media) / "warm-up.mkv", 2)
        bare = bare_small_medians(small)
        results: dict[str, list[ManyResult]] = {c.key: [] for c in cases}
        problems: dict[str, str] = {}
        for round_ in range(args.runs):
            for case in round_order(cases, round_):
                if case.key in problems:
                    continue
                try:
                    results[case.key].append(
                        measure_many(case, variant, small, warm_path, args.clients, args.client_seconds)
                    )
                except SetupFailed as exc:
                    problems[case.key] = f"not run: {exc}"
                except Exception as exc:
                    problems[case.key] = f"failed in run {round_ + 1}: {type(exc).__name__}: {str(exc)[:200]}"
        rows = [(c, results[c.key], problems.get(c.key, "")) for c in cases]
    size = len(variant.data)
    rate = {
        c.key: statistics.median(r.uploads / r.wall for r in runs) for c, runs, problem in rows if runs and not problem
    }
    peers = [rate[c.key] for c, _, _ in rows if c.is_peer and c.key in rate]
    best = max(peers) if peers else None
    print(
        f"\n{args.clients} clients at once, each uploading {size / 1e6:.1f} MB files (real video, each its own"
        f" content) one after another for {args.client_seconds:.0f} s; median of {args.runs} run(s), loopback,"
        f" {os.cpu_count()} cores\n"
    )
    columns = [("uploads", 8), ("up/s", 8), ("MB/s", 8), ("x peer", 8), ("p50 ms", 8), ("p99 ms", 8)]
    columns += [("fixed ms", 9), ("srv ms", 8), ("srv CPU", 8), ("cli CPU", 8)]
    columns += [("CPU/up", 8), ("own/up", 8), ("sys %", 7)]
    columns += [("peak RSS", 9), ("tree RSS", 9)]
    columns += [("w/B", 6), ("r/B", 6), ("backlog", 8)]
    header = f"{'server':<30}" + "".join(f"{name:>{width}}" for name, width in columns)
    print(header)
    print("-" * len(header))
    for case, runs, problem in rows:
        mode = "single" if case.mode in ("single", "baseline", "ceiling") else "tus"
        label = case.label + (" (tus)" if case.mode == "tus" else "")
        if problem or not runs:
            print(f"{label:<30}{problem or 'no run'}")
            continue
        latencies = sorted(t for r in runs for t in r.latencies)
        p50 = statistics.median(latencies) * 1000
        p99 = statistics.quantiles(latencies, n=100)[98] * 1000 if len(latencies) > 1 else p50
        uploads = statistics.median(r.uploads for r in runs)
        speed = statistics.median(r.uploads * size / r.wall for r in runs) / 1e6
        ratio = f"{rate[case.key] / best:.2f}" if best else "-"
        fixed = (statistics.median(r.small_median for r in runs) - bare[mode]) * 1000
        server_ms = [r.server_small for r in runs if r.server_small is not None]
        own = f"{statistics.median(server_ms) * 1000:.1f}" if server_ms else "-"
        backlogs = [r.backlog for r in runs if r.backlog is not None]
        backlog = f"{max(backlogs)}" if backlogs else "-"
        fixed_text = "-" if case.kind == "baseline" else f"{fixed:.1f}"
        print(
            f"{label:<30}{uploads:>8.0f}{rate[case.key]:>8.1f}{speed:>8.1f}{ratio:>8}{p50:>8.0f}{p99:>8.0f}"
            f"{fixed_text:>9}{own:>8}{statistics.median(r.server_cpu for r in runs):>8.1f}"
            f"{statistics.median(r.client_cpu for r in runs):>8.1f}"
            f"{statistics.median(r.server_cpu / r.uploads for r in runs) * 1000:>8.1f}"
            f"{statistics.median(r.own_cpu / r.uploads for r in runs) * 1000:>8.1f}"
            f"{statistics.median(100 * r.server_kernel / r.server_cpu for r in runs if r.server_cpu):>7.0f}"
            f"{max(r.peak_rss for r in runs) / (1 << 20):>9.1f}{max(r.tree_rss for r in runs) / (1 << 20):>9.1f}"
            f"{statistics.median(r.written for r in runs) / (uploads * size):>6.2f}"
            f"{statistics.median(r.read for r in runs) / (uploads * size):>6.2f}{backlog:>8}"
        )
    print(
        f"\nup/s, MB/s: completed uploads (and their bytes) per second of wall time, from the start to the last"
        f"\n  answer; x peer: up/s over the best of the tus peers. p50/p99 ms: one upload's time (tus: creation"
        f"\n  POST + PATCH, each on a new connection as tuspy makes them), over every upload of every run."
        f"\nfixed ms: the median time of a small upload ({len(small.data) / 1e3:.0f} KB, {FIXED_COST_UPLOADS} one after"
        f" another before the clients start)\n  minus the bare stack's for the same requests (bench/baseline_app.py:"
        f" single {bare['single'] * 1000:.1f} ms, tus {bare['tus'] * 1000:.1f} ms):"
        f"\n  what the server adds to an upload beyond receiving its bytes (vidgate: each small upload's analysis"
        f"\n  finished before the next). srv ms: vidgate's own time in its routes per small upload (median; the"
        f"\n  sum of its request-duration histogram: route called -> answer sent; streaming ~92 KB is ~0.1 ms)."
        f"\nCPU/up, own/up: CPU ms per completed upload while the clients ran, of the server with every process"
        f"\n  under it (srv CPU / uploads; vidgate: + its probe children and the analysis child), and of the"
        f"\n  server process alone (vidgate: the API process). sys %: the kernel's share of CPU/up (system"
        f"\n  time: receiving, copying into the page cache, forks and exits of probe children, thread wake-ups)."
        f"\npeak RSS: the server process's VmHWM (vidgate: the API process); tree RSS: VmRSS of it and every process"
        f"\n  under it at the end (vidgate: + probe forkserver, spare probe, analysis child)."
        f"\nw/B, r/B: bytes written to and read from disk (missing the page cache) per uploaded byte."
        f"\nbacklog: vidgate's videos still queued or processing when the clients stopped (each upload is"
        f"\n  analysed; the peers store only). Every upload's SHA-256 is checked: the hash vidgate answered,"
        f"\n  the stored file for the peers (the ceiling: its stored body against the hash it answered)."
    )


@dataclass
class Row:
    case: Case
    runs: list[Measurement] = field(default_factory=list)
    problem: str = ""  # "not run: ..." or "failed: ..."

    def speed(self, size: int) -> float:
        return size / statistics.median(r.seconds for r in self.runs) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=None, help="default 5 (--many-clients: 1)")
    parser.add_argument("--chunk-mib", type=int, default=10)
    parser.add_argument(
        "--only", default="", help=f"comma-separated rows to run (default all): {','.join(c.key for c in CASES)}"
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="after the measured runs, one more (unmeasured) run per Python server under py-spy "
        "(the bench extra: scripts/install --all-extras): DIR/KEY.txt",
    )
    parser.add_argument(
        "--many-clients",
        action="store_true",
        help=f"the many-clients table instead: --clients at once, each uploading --client-mib files for "
        f"--client-seconds (rows: {','.join(MANY_CASES)}), with each server's fixed cost of a small upload",
    )
    parser.add_argument(
        "--src",
        type=Path,
        help="the vidgate sources (a checkout's src/) the vidgate rows run (default: what PYTHONPATH imports)",
    )
    parser.add_argument(
        "--compare-src",
        type=Path,
        metavar="DIR",
        help="also run every chosen vidgate row from these sources (e.g. main's src/), as rows of the same run",
    )
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--client-seconds", type=float, default=20.0)
    parser.add_argument("--client-mib", type=int, default=4)
    args = parser.parse_args()
    args.runs = args.runs or (1 if args.many_clients else 5)
    chunk_size = args.chunk_mib << 20
    wanted = [key.strip() for key in args.only.split(",") if key.strip()]
    unknown = set(wanted) - {c.key for c in CASES}
    if unknown:
        parser.error(f"unknown rows in --only: {', '.join(sorted(unknown))}")
    cases = [c for c in CASES if not wanted or c.key in wanted]
    if args.src:
        cases = [replace(c, src=str(args.src.resolve())) if c.is_vidgate else c for c in cases]
    if args.compare_src:
        other = args.compare_src.resolve()
        name = other.parent.name if other.name == "src" else other.name
        extra = [
            replace(c, key=f"{c.key}@{name}", label=f"{c.label} @{name}", src=str(other)) for c in cases if c.is_vidgate
        ]
        cases = [case for c in cases for case in [c, *(e for e in extra if e.key == f"{c.key}@{name}")]]
    if args.many_clients:
        many = [c for c in cases if c.key.split("@")[0] in MANY_CASES]
        if not many:
            parser.error(f"--many-clients runs only: {', '.join(MANY_CASES)}")
        for case in many:
            if case.kind in PYTHON_PEERS:
                ensure_python_peer(case.kind)
            elif case.kind == "tus-node":
                ensure_node_peer()
        many_clients(args, many)
        return
    rows = [Row(c) for c in cases]

    for row in rows:  # install the peers first (once), so a broken one is known before measuring
        try:
            if row.case.kind in PYTHON_PEERS:
                ensure_python_peer(row.case.kind)
            elif row.case.kind == "tus-node":
                ensure_node_peer()
            if row.case.on_s3:
                ensure_swift()
            if row.case.kind == "tus-node-s3":
                ensure_node_s3_peer()
        except SetupFailed as exc:
            row.problem = f"not run: {exc}"

    with tempfile.TemporaryDirectory(prefix="vidgate-bench-media-") as media:
        path = make_video(Path(media) / "bench.mkv", args.size_mib)
        warm_path = make_video(Path(media) / "warm-up.mkv", 2)
        size = path.stat().st_size
        digest = sha256_of(path)
        for round_ in range(args.runs):
            for row in round_order(rows, round_):
                if row.problem:
                    continue
                try:
                    row.runs.append(measure(row.case, path, warm_path, chunk_size, digest))
                except SetupFailed as exc:
                    row.problem = f"not run: {exc}"
                except Exception as exc:  # the row reports it
                    row.problem = f"failed in run {round_ + 1}: {type(exc).__name__}: {str(exc)[:200]}"
        if args.py_spy:
            args.py_spy.mkdir(parents=True, exist_ok=True)
            for row in rows:
                if not row.problem and row.case.kind != "tus-node":
                    measure(row.case, path, warm_path, chunk_size, digest, profile=args.py_spy / f"{row.case.key}.txt")

    print(
        f"\nfile: {size / 1e6:.1f} MB real video (rawvideo in Matroska), {args.chunk_mib} MiB chunks, "
        f"median of {args.runs} runs each (interleaved), loopback, {os.cpu_count()} cores\n"
    )
    speeds = {row.case.key: row.speed(size) for row in rows if row.runs and not row.problem}
    base = speeds.get("baseline")
    ceiling = speeds.get("ceiling")
    peer_speeds = [speeds[r.case.key] for r in rows if r.case.is_peer and not r.case.on_s3 and r.case.key in speeds]
    s3_ceiling, s3_peer = speeds.get("tus-fwd-s3", speeds.get("boto3-s3")), speeds.get("tus-node-s3")
    best_peer = max(peer_speeds) if peer_speeds else None
    columns = [("MB/s", 8), ("spread", 8), ("x base", 8), ("x ceil", 8), ("x peer", 8), ("srv CPU", 9)]
    columns += [("cli CPU", 9), ("srv ms", 8), ("peak RSS", 10), ("+RSS", 8), ("tree RSS", 10)]
    columns += [("disk w/B", 10), ("disk r/B", 10)]
    header = f"{'server':<32}" + "".join(f"{name:>{width}}" for name, width in columns)
    print(header)
    print("-" * len(header))
    for row in rows:
        label = row.case.label + (" (tuspy)" if row.case.mode == "tus" else "")
        if row.problem:
            print(f"{label:<32}{row.problem}")
            continue
        speed = speeds[row.case.key]
        times = [r.seconds for r in row.runs]
        spread = f"{100 * (max(times) - min(times)) / statistics.median(times):.0f}%"
        ratio_base = f"{speed / base:.2f}" if base else "-"
        against_ceiling, against_peer = (s3_ceiling, s3_peer) if row.case.on_s3 else (ceiling, best_peer)
        ratio_ceiling = f"{speed / against_ceiling:.2f}" if against_ceiling else "-"
        ratio_peer = f"{speed / against_peer:.2f}" if against_peer else "-"
        server_cpu = statistics.median(r.server_cpu for r in row.runs)
        client_cpu = statistics.median(r.client_cpu for r in row.runs)
        rss = max(r.peak_rss for r in row.runs) / (1 << 20)
        growth = max(r.rss_growth for r in row.runs) / (1 << 20)
        tree = max(r.tree_rss for r in row.runs) / (1 << 20)
        written = statistics.median(r.written for r in row.runs) / size
        read = statistics.median(r.read for r in row.runs) / size
        routes = [r.route_seconds for r in row.runs if r.route_seconds is not None]
        route = f"{statistics.median(routes) * 1000:.1f}" if routes else "-"
        print(
            f"{label:<32}{speed:>8.1f}{spread:>8}{ratio_base:>8}{ratio_ceiling:>8}{ratio_peer:>8}"
            f"{server_cpu:>9.2f}{client_cpu:>9.2f}{route:>8}{rss:>10.1f}{growth:>8.1f}{tree:>10.1f}"
            f"{written:>10.2f}{read:>10.2f}"
        )
    print(
        "\nspread: (slowest - fastest run) / median time. x base: MB/s over the baseline's;"
        "\n  x ceil: over the bare app that also hashes and writes every byte (bench/hashwrite_app.py);"
        "\n  x peer: over the fastest of tuspyserver, tussi and @tus/server."
        "\n  S3 rows (Swift 2.30 s3api on this machine): x ceil is over the bare forwarder (bare boto3 multipart"
        "\n  upload when it did not run), x peer"
        "\n  over @tus/s3-store; boto3's row has no server (RSS and cli CPU are this process's)."
        "\n  vidgate on S3: uploads in progress as S3 multipart uploads (STORAGE_PARTS=backend, the default);"
        "\n  'local parts': part files on local disk, the finished file copied into the bucket at completion."
        f"\nsrv CPU, cli CPU: CPU seconds (user + system, median) of the server with the processes under"
        f"\n  it, and of this client, during the upload; {os.cpu_count()} cores give at most"
        f" {os.cpu_count()} CPU seconds per second of wall time."
        "\nsrv ms: vidgate's time in its routes for the upload (median; the sum of its request-duration"
        "\n  histogram: route called -> answer sent, streaming included; a small upload's without streaming:"
        "\n  --many-clients, srv ms)."
        "\npeak RSS: the server process's VmHWM in MiB (for @tus/server the node process), max over runs;"
        "\n  +RSS: its growth from when the server was ready and warmed up (one 2 MiB upload); tree RSS: VmRSS"
        "\n  of it and every process under it right after the upload (vidgate: + the probe forkserver, the"
        "\n  spare probe child and the analysis child, which analysed the warm-up upload)."
        "\ndisk w/B, r/B: write_bytes and read_bytes of /proc/PID/io during the upload per uploaded byte"
        "\n  (r/B counts only reads that missed the page cache)."
        "\nvidgate hashes (SHA-256) the whole file (seed chunks: each chunk too) and validates it (probe,"
        "\n  structure) even though tuspy sends no Upload-Checksum (same client settings for every tus"
        "\n  server); the peers hash and check nothing."
        "\n  Durability as shipped: tussi fsyncs every PATCH (FilesystemStorage fsync=True default),"
        "\n  vidgate does not (UPLOAD_FSYNC=false), tuspyserver flushes to the page cache, @tus/file-store"
        "\n  writes a stream."
        f"\nPeers: {TUSPYSERVER} and {TUSSI} under uvicorn {metadata.version('uvicorn')} (uvloop + httptools),"
        f"\n  tuspyserver with fastapi {metadata.version('fastapi')}, tussi as a bare ASGI app;"
        f"\n  @tus/server {NODE_PACKAGES['@tus/server']} + @tus/file-store {NODE_PACKAGES['@tus/file-store']}"
        f" on node {node_version()}. Client: tuspy {metadata.version('tuspy')}."
    )


if __name__ == "__main__":
    main()
