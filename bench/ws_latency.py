"""WebSocket delivery latency: publish to receipt, Redis bus against in-process bus.

    .venv/bin/python bench/ws_latency.py [--mode synthetic|uploads|both] [--clients 500] [--rate 500]
        [--seconds 10] [--upload-clients 200,1000] [--uploads-per-second 1] [--upload-seconds 20]
        [--buses local,redis,redis-inline] [--client raw|node|python] [--repeat N]
        [--client-processes 1] [--compare-src ../main/src] [--py-spy DIR]

Mode ``synthetic`` (below); mode ``uploads``: N clients of ONE user, subscribed to everything,
while real uploads (unique clips in 64 KB chunks, POST /v1/upload/video) are made and processed:
in-process (PROCESSING_QUEUE=inline, local bus) and by a `vidgate worker` (celery, Redis bus).
Every event the user's stream holds from the first upload on must reach every client once:
``lost`` counts the (client, event) pairs missing, ``dup`` those received twice. Goals (issue 20):
200 clients p99 < 50 ms, 1,000 clients p99 < 100 ms, 0 lost. The clients run in one Node.js
process (bench/ws_follower.mjs), by default reading the frames off plain TCP sockets (``--client
raw``; ``node`` for Node's WebSocket, ``python`` for `websockets` in this process, which at 1,000
clients saturates a core by itself); ``client CPU %`` says what they cost, ``srv+jobs CPU %`` the
server and the worker with all their children (probes, analyses). ``--buses redis-inline`` adds a
row with the Redis bus and the jobs in the server, as in-process: the bus alone differs.

Mode synthetic:
For each bus a fresh `vidgate serve` (SQLite, its own data dir) gets CLIENTS connections, one
user each, subscribed to everything of theirs. Then upload_progress events are published at a
steady RATE per second, one user after another (so every client gets RATE/CLIENTS a second):
  in-process   from a thread inside the server process, through the local bus;
  redis        from a separate process (as a Celery worker would), through Redis pub/sub.
Each event is stored first (numbered, in a transaction of the server's SQLite database) and
published after the commit, as vidgate's services publish theirs.
Latency is the client's clock at receipt minus the event's timestamp (set when published; one
machine, one clock). Prints p50/p99/max, events lost, and the CPU the server used (percent of
one core) over the publishing window. Goal: p99 under 50 ms with Redis. Each bus runs twice:
with the event store, and as before it (``bus only``: published unnumbered, nothing stored).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from vidgate.auth import create_key
from vidgate.config import load_settings
from vidgate.db import migrate
from vidgate.db.engine import Database
from vidgate.db.models import UserAccount

HERE = Path(__file__).resolve().parent
REDIS_URL = "redis://127.0.0.1:6379/0"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_users(data_dir: Path, count: int) -> tuple[list[str], list[str]]:
    """API keys and user ids for ``count`` users in the server's own database."""
    settings = load_settings(server={"data_dir": str(data_dir)})
    db = Database(settings.database_url)
    migrate.upgrade(db)
    keys = [create_key(db, f"bench-{n}")[0] for n in range(count)]
    with db.session() as session:
        by_name = {u.username: u.id for u in session.query(UserAccount)}
    db.dispose()
    return keys, [by_name[f"bench-{n}"] for n in range(count)]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pids: list[int]) -> float:
    """CPU of ``pids`` and every process under them, with what their ended children used (the
    server's probe and analysis children, the worker's pool): what the jobs cost beside delivery."""
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        used[pid] = sum(int(value) for value in fields[11:15]) / tick
    total = 0.0
    for pid in used:
        ancestor = pid
        while ancestor > 1 and ancestor not in pids:
            ancestor = parents.get(ancestor, 0)
        if ancestor in pids:
            total += used[pid]
    return total


async def client(url: str, key: str, latencies: list[float], ready: asyncio.Event, counter: list[int]) -> None:
    socket: ClientConnection
    async with connect(url, additional_headers={"X-API-Key": key}, max_size=None) as socket:
        counter[0] += 1
        if counter[0] == counter[1]:
            ready.set()
        async for message in socket:
            received = time.time()
            event = json.loads(message)
            if event["event_type"] == "upload_progress":
                latencies.append(received - datetime.fromisoformat(event["timestamp"]).timestamp())


async def measure(bus: str, clients: int, rate: float, seconds: float, store: str = "store") -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix=f"ws-bench-{bus}-") as tmp:
        work = Path(tmp)
        keys, user_ids = make_users(work, clients)
        users_json = work / "users.json"
        users_json.write_text(json.dumps(user_ids))
        start_file = work / "start"
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDGATE_", "WEBSOCKET_", "DATABASE_"))}
        env.update(WEBSOCKET_BUS=bus, WEBSOCKET_REDIS_URL=REDIS_URL, AUTH_CREATE_DEV_KEY="false")
        publish_args = [str(users_json), str(rate), str(seconds), str(start_file), store]
        serve = [sys.executable, str(HERE / "ws_peer.py"), "serve", str(work), str(port)]
        if bus == "local":
            serve += ["--publish", *publish_args]
        server = subprocess.Popen(serve, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        publisher = None
        if bus == "redis":
            publish = [sys.executable, str(HERE / "ws_peer.py"), "publish", *publish_args, REDIS_URL, str(work)]
            publisher = subprocess.Popen(publish, env=env)
        try:
            await wait_for_port(port)
            latencies: list[float] = []
            ready = asyncio.Event()
            counter = [0, clients]
            # since=0: every event of these new users is owed, however late a socket's start is read
            url = f"ws://127.0.0.1:{port}/ws?subscribe=all&since=0"
            tasks = []
            for key in keys:  # connect in waves so the listen backlog never overflows
                tasks.append(asyncio.create_task(client(url, key, latencies, ready, counter)))
                if len(tasks) % 50 == 0:
                    await asyncio.sleep(0.05)
            await asyncio.wait_for(ready.wait(), 60)
            await asyncio.sleep(0.5)
            cpu_before, wall_before = cpu_seconds(server.pid), time.monotonic()
            start_file.touch()
            expected = int(rate * seconds)
            deadline = time.monotonic() + seconds + 30
            while len(latencies) < expected and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            cpu = (cpu_seconds(server.pid) - cpu_before) / (time.monotonic() - wall_before)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for process in (server, publisher):
                if process is not None:
                    process.terminate()
                    process.wait(timeout=20)
    ordered = sorted(latencies)
    return {
        "p50": statistics.median(ordered) * 1000,
        "p99": ordered[int(len(ordered) * 0.99) - 1] * 1000 if ordered else float("nan"),
        "max": ordered[-1] * 1000 if ordered else float("nan"),
        "lost": expected - len(ordered),
        "cpu": cpu * 100,
    }


async def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 120  # a loaded machine starts slowly
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError("the server did not start")


class Receipts:
    """What one client received: (sequence, latency in s, event type) of each numbered event."""

    def __init__(self) -> None:
        self.got: list[tuple[int, float, str]] = []


class PythonFollowers:
    """N `websockets` clients in this process (``--client python``): at 1,000 clients they
    saturate a core of their own, so what they measure is mostly their own backlog."""

    def __init__(self, url: str, key: str, count: int) -> None:
        self.url, self.key, self.count = url, key, count
        self.receipts = [Receipts() for _ in range(count)]
        self.tasks: list[asyncio.Task[None]] = []
        self.connected: list[int] = []

    async def follow(self, receipts: Receipts) -> None:
        async with connect(self.url, additional_headers={"X-API-Key": self.key}, max_size=None) as socket:
            self.connected.append(1)
            async for message in socket:
                received = time.time()
                event = json.loads(message)
                if event.get("sequence"):
                    sent = datetime.fromisoformat(event["timestamp"]).timestamp()
                    receipts.got.append((event["sequence"], received - sent, event["event_type"]))

    async def connect(self) -> None:
        for receipts in self.receipts:  # in waves, so the listen backlog never overflows
            self.tasks.append(asyncio.create_task(self.follow(receipts)))
            if len(self.tasks) % 50 == 0:
                await asyncio.sleep(0.05)
        while len(self.connected) < self.count:
            await asyncio.sleep(0.05)

    def cpu_seconds(self) -> float:
        return time.process_time()  # the whole bench process: an upper bound

    async def collect(self, after: int, expected: list[int]) -> list[Receipts]:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(
            {s for s, _, _ in r.got if s > after} != set(expected) for r in self.receipts
        ):
            await asyncio.sleep(0.2)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        return self.receipts


class NodeFollowers:
    """N clients in Node.js processes (bench/ws_follower.mjs): one by default, ``processes`` to
    see how much of the latency is the one client process reading all the sockets."""

    def __init__(self, url: str, count: int, kind: str = "raw", processes: int = 1) -> None:
        self.url, self.count, self.kind = url, count, kind
        self.counts = [count // processes + (n < count % processes) for n in range(processes)]
        self.processes: list[asyncio.subprocess.Process] = []
        self.used = 0.0

    async def connect(self) -> None:
        script = str(HERE / "ws_follower.mjs")
        for count in self.counts:
            command = ["node", "--experimental-websocket", script, self.url, str(count), self.kind]
            process = await asyncio.create_subprocess_exec(
                *command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, limit=1 << 30
            )
            self.processes.append(process)
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), 60)
            if not line.startswith(b"connected"):
                raise RuntimeError(f"ws_follower.mjs: {line!r}")

    def cpu_seconds(self) -> float:
        """The clients' CPU so far; after collect, what they had used when the last event was stored."""
        if any(process.returncode is not None for process in self.processes):
            return self.used
        return sum(cpu_seconds(process.pid) for process in self.processes)

    async def collect(self, after: int, expected: list[int]) -> list[Receipts]:
        self.used = self.cpu_seconds()
        line = json.dumps({"after": after, "expected": expected}).encode() + b"\n"
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(line)
            await process.stdin.drain()
        receipts = []
        for process in self.processes:
            assert process.stdout is not None
            answer = json.loads(await asyncio.wait_for(process.stdout.readline(), 120))
            await process.wait()
            for client in answer:
                receipt = Receipts()
                pairs = zip(client["got"], client["types"], strict=True)
                receipt.got = [(s, ms / 1000, kind) for (s, ms), kind in pairs]
                receipts.append(receipt)
        return receipts


def make_clips(directory: Path, count: int) -> list[bytes]:
    """``count`` small real MP4s, each of bytes of its own (so each is processed, not deduplicated)."""
    sys.path.insert(0, str(HERE.parent))
    from tests.media import make_video

    seed = uuid.uuid4().int % 100_000
    return [make_video(directory / f"clip{n}.mp4", frames=25, seed=seed + n).read_bytes() for n in range(count)]


def upload(base_url: str, key: str, data: bytes) -> str:
    """One real chunked upload (64 KB chunks); returns the video id."""
    chunk = 64 * 1024
    parts = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    session_id = f"bench-{uuid.uuid4().hex}"
    with httpx.Client(base_url=base_url, headers={"X-API-Key": key}, timeout=60) as client:
        for index, part in enumerate(parts):
            form = {"session_id": session_id, "chunk_index": str(index), "total_chunks": str(len(parts))}
            answer = client.post("/v1/upload/video", data=form, files={"file": ("clip.mp4", part, "video/mp4")})
            answer.raise_for_status()
        return str(answer.json()["data"]["video_id"])


def wait_processed(base_url: str, key: str, video_ids: list[str], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base_url, headers={"X-API-Key": key}, timeout=30) as client:
        for video_id in video_ids:
            while client.get(f"/v1/videos/{video_id}").json()["data"]["status"] not in ("completed", "failed"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"video {video_id} not processed in {timeout} s")
                time.sleep(0.2)


def stored_sequences(data_dir: Path, user_id: str, after: int) -> list[int]:
    from vidgate.events.store import EventStore

    db = Database(load_settings(server={"data_dir": str(data_dir)}).database_url)
    found: list[int] = []
    try:
        while True:
            events = EventStore(db).read(user_id, after, limit=500)
            found += [e.sequence for e in events]
            if len(events) < 500:
                return found
            after = events[-1].sequence
    finally:
        db.dispose()


def gc_pauses(base_url: str) -> dict[str, float]:
    """The serve process's full collections so far (``vidgate_gc_pause_seconds``, generation 2):
    their count, their seconds, and how many took 10 ms or more."""
    from prometheus_client.parser import text_string_to_metric_families

    found = {"count": 0.0, "sum": 0.0, "under_10ms": 0.0}
    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.startswith("vidgate_gc_pause_seconds") or sample.labels.get("generation") != "2":
                continue
            if sample.name.endswith("_count"):
                found["count"] = sample.value
            elif sample.name.endswith("_sum"):
                found["sum"] = sample.value
            elif sample.labels.get("le") == "0.01":
                found["under_10ms"] = sample.value
    return found


async def measure_uploads(
    bus: str,
    clients: int,
    per_second: float,
    seconds: float,
    client: str,
    src: str | None = None,
    py_spy: Path | None = None,
    client_processes: int = 1,
) -> dict[str, Any]:
    """N clients of one user while real uploads are made and processed; the server (and worker)
    from ``src`` if given (another checkout's sources), else from this one's; with ``py_spy``, a
    raw py-spy profile of the server over the measured window goes there."""
    with tempfile.TemporaryDirectory(prefix=f"ws-uploads-{bus}-") as tmp:
        work = Path(tmp)
        (key,), (user_id,) = make_users(work, 1)
        clips = make_clips(work, int(per_second * seconds) + 1)
        port = free_port()
        redis_db = 8 + os.getpid() % 7  # a database of the shared Redis of this run's own
        redis_url = f"redis://127.0.0.1:6379/{redis_db}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDGATE_", "WEBSOCKET_", "DATABASE_"))}
        env.update(AUTH_CREATE_DEV_KEY="false", VIDGATE_DATA_DIR=str(work), VIDGATE_LOG_LEVEL="warning")
        if src is not None:
            env["PYTHONPATH"] = src
        if bus == "redis":
            env.update(PROCESSING_QUEUE="celery", CELERY_BROKER_URL=redis_url, WEBSOCKET_REDIS_URL=redis_url)
            env.update(WEBSOCKET_BUS="redis")
            import redis

            redis.Redis.from_url(redis_url).flushdb()
        elif bus == "redis-inline":  # the Redis bus, the jobs in the server as in-process: the bus alone
            env.update(PROCESSING_QUEUE="inline", WEBSOCKET_BUS="redis", WEBSOCKET_REDIS_URL=redis_url)
        else:
            env.update(PROCESSING_QUEUE="inline", WEBSOCKET_BUS="local")
        # the real command: run as ``-m vidgate``, its probe and analysis children do not re-run a
        # main script (bench/ws_peer.py, which imports the whole app: ~1.5 s of CPU per upload)
        serve = [sys.executable, "-m", "vidgate", "serve", "--port", str(port)]
        processes = [subprocess.Popen(serve, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        if bus == "redis":
            worker = [sys.executable, "-m", "vidgate", "worker", "--concurrency", "2"]
            processes.append(subprocess.Popen(worker, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        base_url = f"http://127.0.0.1:{port}"
        try:
            await wait_for_port(port)
            first = await asyncio.to_thread(upload, base_url, key, clips[0])  # warm-up: models loaded
            await asyncio.to_thread(wait_processed, base_url, key, [first])
            start = stored_sequences(work, user_id, 0)[-1]
            url = f"ws://127.0.0.1:{port}/ws?subscribe=all&since={start}"
            followers: NodeFollowers | PythonFollowers
            if client in ("node", "raw"):
                kind = "raw" if client == "raw" else "websocket"
                followers = NodeFollowers(f"{url}&api_key={key}", clients, kind, client_processes)
            else:
                followers = PythonFollowers(url, key, clients)
            await followers.connect()
            await asyncio.sleep(1.0)
            gc_before = await asyncio.to_thread(gc_pauses, base_url)
            cpu_before, wall_before = cpu_seconds(processes[0].pid), time.monotonic()
            all_cpu_before = tree_cpu_seconds([process.pid for process in processes])
            client_cpu_before = followers.cpu_seconds()
            recorder = None
            if py_spy is not None:
                spy = [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw", "--rate", "200"]
                recorder = subprocess.Popen(
                    [*spy, "--pid", str(processes[0].pid), "-o", str(py_spy)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            video_ids: list[str] = []

            def upload_steadily() -> None:
                threads = []
                began = time.monotonic()
                for n, clip in enumerate(clips[1:]):
                    if (delay := began + n / per_second - time.monotonic()) > 0:
                        time.sleep(delay)
                    thread = threading.Thread(target=lambda c=clip: video_ids.append(upload(base_url, key, c)))
                    thread.start()
                    threads.append(thread)
                for thread in threads:
                    thread.join()

            await asyncio.to_thread(upload_steadily)
            await asyncio.to_thread(wait_processed, base_url, key, list(video_ids))
            if recorder is not None:
                recorder.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
                recorder.wait(timeout=60)
            expected = stored_sequences(work, user_id, start)
            receipts = await followers.collect(start, expected)
            wall = time.monotonic() - wall_before
            cpu = (cpu_seconds(processes[0].pid) - cpu_before) / wall
            all_cpu = (tree_cpu_seconds([process.pid for process in processes]) - all_cpu_before) / wall
            client_cpu = (followers.cpu_seconds() - client_cpu_before) / wall
            gc_after = await asyncio.to_thread(gc_pauses, base_url)
        finally:
            for process in processes:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
    wanted = set(expected)
    lost = dup = 0
    latencies: list[float] = []
    by_type: dict[str, list[float]] = {}
    for receipt in receipts:
        mine = [(s, lat, kind) for s, lat, kind in receipt.got if s > start]
        sequences = [s for s, _, _ in mine]
        lost += len(wanted - set(sequences))
        dup += len(sequences) - len(set(sequences))
        latencies += [lat for _, lat, _ in mine]
        for _, lat, kind in mine:
            by_type.setdefault(kind, []).append(lat)
    ordered = sorted(latencies)
    tails = {kind: sorted(values)[max(0, int(len(values) * 0.99) - 1)] * 1000 for kind, values in by_type.items()}
    return {
        "events": len(expected),
        "p50": statistics.median(ordered) * 1000 if ordered else float("nan"),
        "p99": ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000 if ordered else float("nan"),
        "max": ordered[-1] * 1000 if ordered else float("nan"),
        "lost": lost,
        "dup": dup,
        "cpu": cpu * 100,
        "client_cpu": client_cpu * 100,
        "all_cpu": all_cpu * 100,
        "tails": tails,
        "full_gcs": gc_after["count"] - gc_before["count"],
        "full_gc_ms": (gc_after["sum"] - gc_before["sum"]) * 1000,
        "full_gcs_10ms": (gc_after["count"] - gc_after["under_10ms"]) - (gc_before["count"] - gc_before["under_10ms"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("synthetic", "uploads", "both"), default="both")
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--rate", type=float, default=500.0, help="events per second, all clients together")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--upload-clients", default="200,1000", help="client counts of the uploads mode")
    parser.add_argument("--uploads-per-second", type=float, default=1.0)
    parser.add_argument("--upload-seconds", type=float, default=20.0)
    parser.add_argument(
        "--client",
        choices=("raw", "node", "python"),
        default="raw" if shutil.which("node") else "python",
        help="the uploads mode's clients: one Node.js process reading the frames off plain TCP sockets (raw, the"
        " default if node is installed), the same with Node's WebSocket (node), or Python in this one",
    )
    parser.add_argument(
        "--buses",
        default="local,redis",
        help="the uploads mode's rows: local, redis (a vidgate worker runs the jobs), redis-inline (the server runs"
        " them, as with local: the bus alone differs)",
    )
    parser.add_argument(
        "--compare-src",
        help="the uploads mode's rows also run with the server from this sources directory (another"
        " checkout's src), each right after this tree's: before and after in one run",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="the uploads mode's rows, each this many times (runs vary)"
    )
    parser.add_argument(
        "--client-processes", type=int, default=1, help="the Node.js clients spread over this many processes"
    )
    parser.add_argument("--py-spy", type=Path, help="a directory for a raw py-spy profile of the server per row")
    args = parser.parse_args()
    if args.mode in ("synthetic", "both"):
        print(f"synthetic: {args.clients} clients (one user each), {args.rate:g} events/s for {args.seconds:g} s")
        print(f"{'bus':<36}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'lost':>7}{'server CPU %':>14}")
        rows = (
            ("local", "bus", "in-process, bus only (no store)"),
            ("local", "store", "in-process, event store"),
            ("redis", "bus", "redis, bus only (no store)"),
            ("redis", "store", "redis, event store"),
        )
        for bus, store, label in rows:
            row = asyncio.run(measure(bus, args.clients, args.rate, args.seconds, store))
            print(
                f"{label:<36}{row['p50']:>9.2f}{row['p99']:>9.2f}{row['max']:>9.2f}{row['lost']:>7.0f}"
                f"{row['cpu']:>14.1f}"
            )
    if args.mode in ("uploads", "both"):
        print(
            f"uploads: N clients of one user, {args.uploads_per_second:g} real uploads/s for {args.upload_seconds:g} s,"
            " processed (goal: p99 < 50 ms at 200, < 100 ms at 1,000, 0 lost)"
        )
        print(
            f"{'clients':>8} {'bus':<28}{'events':>7}{'receipts':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
            f"{'lost':>6}{'dup':>5}{'server CPU %':>14}{'client CPU %':>14}{'srv+jobs CPU %':>16}"
        )
        buses = {
            "local": "in-process (inline jobs)",
            "redis": "redis (vidgate worker)",
            "redis-inline": "redis (inline jobs)",
        }
        sources: list[str | None] = [None] + ([str(Path(args.compare_src).resolve())] if args.compare_src else [])
        if args.py_spy is not None:
            args.py_spy.mkdir(parents=True, exist_ok=True)
        for clients in (int(n) for n in args.upload_clients.split(",")):
            for bus in args.buses.split(","):
                for attempt in range(args.repeat):
                    for src in sources:
                        label = buses[bus] if src is None else f"{bus}, --compare-src"
                        profile = None
                        if args.py_spy is not None:
                            profile = args.py_spy / f"{clients}-{bus}-{'compare' if src else 'this'}-{attempt}.txt"
                        load = os.getloadavg()[0]
                        row = asyncio.run(
                            measure_uploads(
                                bus,
                                clients,
                                args.uploads_per_second,
                                args.upload_seconds,
                                args.client,
                                src,
                                profile,
                                args.client_processes,
                            )
                        )
                        print(
                            f"{clients:>8} {label:<28}{row['events']:>7.0f}{row['events'] * clients:>9.0f}"
                            f"{row['p50']:>9.2f}{row['p99']:>9.2f}{row['max']:>9.2f}{row['lost']:>6.0f}"
                            f"{row['dup']:>5.0f}{row['cpu']:>14.1f}{row['client_cpu']:>14.1f}{row['all_cpu']:>16.1f}"
                        )
                        tails = ", ".join(f"{kind} {ms:.0f}" for kind, ms in sorted(row["tails"].items()))
                        print(f"{'':>9}p99 ms by event type: {tails}")
                        print(
                            f"{'':>9}server full GCs: {row['full_gcs']:.0f}, {row['full_gc_ms']:.0f} ms in all,"
                            f" {row['full_gcs_10ms']:.0f} of 10 ms or more;"
                            f" load {load:.2f} -> {os.getloadavg()[0]:.2f}",
                            flush=True,
                        )


if __name__ == "__main__":
    main()
