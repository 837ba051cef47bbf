"""WebSocket delivery latency: publish to receipt, 500 clients, Redis bus against in-process bus.

    .venv/bin/python bench/ws_latency.py [--clients 500] [--rate 500] [--seconds 10]

For each bus a fresh `vidgate serve` (SQLite, its own data dir) gets CLIENTS connections, one
user each, subscribed to everything of theirs. Then upload_progress events are published at a
steady RATE per second, one user after another (so every client gets RATE/CLIENTS a second):
  in-process   from a thread inside the server process, through the local bus;
  redis        from a separate process (as a Celery worker would), through Redis pub/sub.
Each event is stored first (numbered, in a transaction of the server's SQLite database) and
published after the commit, as vidgate's services publish theirs.
Latency is the client's clock at receipt minus the event's timestamp (set when published; one
machine, one clock). Prints p50/p99/max, events lost, and the CPU the server used (percent of
one core) over the publishing window. Goal: p99 under 50 ms with Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

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


async def measure(bus: str, clients: int, rate: float, seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix=f"ws-bench-{bus}-") as tmp:
        work = Path(tmp)
        keys, user_ids = make_users(work, clients)
        users_json = work / "users.json"
        users_json.write_text(json.dumps(user_ids))
        start_file = work / "start"
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDGATE_", "WEBSOCKET_", "DATABASE_"))}
        env.update(WEBSOCKET_BUS=bus, WEBSOCKET_REDIS_URL=REDIS_URL, AUTH_CREATE_DEV_KEY="false")
        publish_args = [str(users_json), str(rate), str(seconds), str(start_file)]
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
            url = f"ws://127.0.0.1:{port}/ws?subscribe=all"
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
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError("the server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--rate", type=float, default=500.0, help="events per second, all clients together")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(f"{args.clients} clients, {args.rate:g} events/s for {args.seconds:g} s, loopback, 2 cores shared")
    print(f"{'bus':<28}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'lost':>7}{'server CPU %':>14}")
    for bus, label in (("local", "baseline: in-process bus"), ("redis", "redis (worker process)")):
        row = asyncio.run(measure(bus, args.clients, args.rate, args.seconds))
        print(
            f"{label:<28}{row['p50']:>9.2f}{row['p99']:>9.2f}{row['max']:>9.2f}{row['lost']:>7.0f}{row['cpu']:>14.1f}"
        )


if __name__ == "__main__":
    main()
