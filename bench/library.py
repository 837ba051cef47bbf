"""How long one page of GET /v1/videos takes in a big library, with each filter; and how fast
``GET /v1/videos/{id}/content`` serves bytes next to a bare Starlette ``FileResponse``.

    .venv/bin/python bench/library.py [--videos 100000] [--runs 300] [--explain]
                                      [--serve-mib 256] [--serve-rounds 5] [--skip-listing] [--skip-serving]
                                      [--compare-src ../main/src] [--py-spy PROFILE.txt]

Fills a fresh SQLite file and a fresh PostgreSQL database (127.0.0.1:5432) with ``--videos``
videos of one user and a tenth as many of another, interleaved in time (each its own
``video`` row over a content; the keyset indexes lead with the owner): upload sessions,
statuses (90 % completed, 5 % failed, 3 % processing, 2 % queued), review states (5 %
approved, 2 % rejected, 1 % escalated), file names from 20 words (5 % each) with 0.1 %
holding a rare word. Then times :func:`vidgate.library.listing.page` (what the endpoint
runs: the query, its session, the response models) for a page of 50 with each filter; ANALYZE
runs first, as autovacuum / ``PRAGMA optimize`` would. ``--explain`` prints each query plan.
Each item's signed URLs are made too (the endpoint does). Goal: p99 < 20 ms.

Serving: a ``vidgate serve`` (embedded default, its own data directory) holding one
``--serve-mib`` file as a video's content, and the baselines of ``bench/sendfile_app.py`` (the
same file behind Starlette's FileResponse alone, and behind vidgate's StoredFileResponse alone,
under the same uvicorn with uvloop + httptools; the latter again under the zero-copy protocol
``vidgate serve`` runs, so it is sent with ``sendfile``: the floor of any ASGI app there; and a
bare asyncio server whose body is the kernel's zero-copy ``sendfile``, the machine's ceiling).
Each round asks each, in turn, for the whole file four times over two connections; for 16 open-ended ranges
``bytes=N-`` from random offsets in the first half, each read to the end (what a ``<video>``
sends when it starts and seeks); and for 1,024 random 1 MiB ranges (the worst case: the cost per
request dominates). vidgate once with the key header, once with a signed URL. MB/s of the best
round (the machine is shared: the best is the least disturbed), the shares of the bare
FileResponse's and of the zero-copy sendfile's best, and the median over the rounds of the
share of the sendfile's in the same round (each row measured seconds from it, under about the
same load: the steadier number). Goal: >= 80 % of the bare sendfile. ``--compare-src``
adds the rows of another checkout's vidgate (``PYTHONPATH`` set to that ``src``) in the same
run, so a change is judged against its base under the same load.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, insert, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.databases import databases

from vidgate.db import migrate
from vidgate.db.engine import Database
from vidgate.db.models import (
    AnalysisStatus,
    Content,
    ReviewDecision,
    SessionStatus,
    UploadSession,
    UserAccount,
    Video,
    VideoReviewState,
    VideoStatus,
    utcnow,
)
from vidgate.library import listing
from vidgate.library.listing import LibraryQuery
from vidgate.library.signing import UrlSigner
from vidgate.storage import BlobStore

ROOT = Path(__file__).resolve().parent.parent
SIGNER = UrlSigner(b"bench" * 8, 3600)
WORDS = [f"w{i:02d}" for i in range(20)]
STATUSES = [VideoStatus.COMPLETED] * 90 + [VideoStatus.FAILED] * 5 + [VideoStatus.PROCESSING] * 3
STATUSES += [VideoStatus.QUEUED] * 2
REVIEWS: list[ReviewDecision | None] = (
    [ReviewDecision.APPROVED] * 5 + [ReviewDecision.REJECTED] * 2 + [ReviewDecision.ESCALATED] + [None] * 92
)
PAGE = 50


def fill(db: Database, count: int, rng: random.Random) -> dict[str, Any]:
    """Returns what the filters need: the user, a content hash, the time span."""
    migrate.upgrade(db)
    start = utcnow() - timedelta(days=365)
    users = {"lib": str(uuid.uuid4()), "other": str(uuid.uuid4()), "third": str(uuid.uuid4())}
    picked_hash = ""
    with db.session() as session:
        session.execute(insert(UserAccount), [{"id": uid, "username": name} for name, uid in users.items()])
        total = count + count // 10 + count // 20
        owners = [users["lib"]] * count + [users["other"]] * (count // 10) + [users["third"]] * (count // 20)
        rng.shuffle(owners)
        for first in range(0, total, 5000):
            contents, videos, sessions, states = [], [], [], []
            for index in range(first, min(total, first + 5000)):
                owner = owners[index]
                video_id = str(uuid.uuid4())
                digest = hashlib.sha256(f"{index}".encode()).hexdigest()
                created = start + timedelta(seconds=index * 365 * 86400 / total)
                if index >= count // 3 and not picked_hash and owner == users["lib"]:
                    picked_hash = digest
                word = "needle" if rng.random() < 0.001 else rng.choice(WORDS)
                contents.append(
                    dict(
                        id=video_id,
                        content_hash=digest,
                        file_size=1000,
                        storage_key=digest,
                        media_info={"container": "mp4", "duration": 12.0, "width": 640, "height": 360},
                        status=AnalysisStatus.COMPLETED,
                        analyses=1,
                        created_at=created,
                    )
                )
                videos.append(
                    dict(
                        id=video_id,
                        user_id=owner,
                        content_id=video_id,
                        filename=f"{word}-{index}.mp4",
                        status=rng.choice(STATUSES),
                        priority=5,
                        created_at=created,
                        updated_at=created,
                        processing_options={},
                        progress=100.0,
                        attempts=1,
                    )
                )
                sessions.append(
                    dict(
                        id=str(uuid.uuid4()),
                        session_id=uuid.uuid4().hex,
                        filename=f"{word}-{index}.mp4",
                        total_chunks=1,
                        chunks_received=1,
                        bytes_received=1000,
                        status=SessionStatus.COMPLETED,
                        user_id=owner,
                        username="u",
                        upload_options={},
                        priority=5,
                        video_id=video_id,
                        is_duplicate=False,
                        created_at=created,
                        last_updated=created,
                        completed_at=created,
                        expires_at=created,
                    )
                )
                decision = rng.choice(REVIEWS)
                if decision is not None:
                    states.append(
                        dict(
                            user_id=owner,
                            video_id=video_id,
                            state=decision,
                            review_id=str(uuid.uuid4()),
                            updated_at=created,
                            video_created_at=created,
                        )
                    )
            session.execute(insert(Content), contents)
            session.execute(insert(Video), videos)
            session.execute(insert(UploadSession), sessions)
            if states:
                session.execute(insert(VideoReviewState), states)
    with db.engine.begin() as connection:
        connection.execute(text("ANALYZE"))
    return {"user": users["lib"], "hash": picked_hash, "start": start}


def queries(facts: dict[str, Any]) -> list[tuple[str, LibraryQuery]]:
    month = facts["start"] + timedelta(days=180)
    base: dict[str, Any] = {"limit": PAGE}
    return [
        ("no filter", LibraryQuery(**base)),
        ("no filter, page 1000 (cursor)", LibraryQuery(**base, cursor="deep")),
        ("status=failed (5 %)", LibraryQuery(**base, status=VideoStatus.FAILED)),
        ("status=queued (2 %)", LibraryQuery(**base, status=VideoStatus.QUEUED)),
        ("review=approved (5 %)", LibraryQuery(**base, review="approved")),
        ("review=escalated (1 %)", LibraryQuery(**base, review="escalated")),
        ("review=unreviewed (92 %)", LibraryQuery(**base, review="unreviewed")),
        (
            "created in one month",
            LibraryQuery(**base, created_after=month, created_before=month + timedelta(days=30)),
        ),
        ("filename contains w07 (5 %)", LibraryQuery(**base, filename="w07")),
        ("filename contains needle (0.1 %)", LibraryQuery(**base, filename="needle")),
        ("content_hash", LibraryQuery(**base, content_hash=facts["hash"])),
        ("status=completed + review=approved", LibraryQuery(**base, status=VideoStatus.COMPLETED, review="approved")),
    ]


def deep_cursor(db: Database, user: str, pages: int) -> str:
    cursor = None
    for _ in range(pages):
        cursor = listing.page(db, user, LibraryQuery(limit=PAGE, cursor=cursor), max_limit=200).next_cursor
    assert cursor is not None
    return cursor


def explain(db: Database, user: str, query: LibraryQuery) -> list[str]:
    """The plan of the listing's own statement, captured as the driver ran it."""
    captured: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if "FROM video" in statement:
            captured.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        listing.page(db, user, query, max_limit=200)
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    statement, parameters = captured[-1]
    prefix = "EXPLAIN QUERY PLAN " if db.engine.dialect.name == "sqlite" else "EXPLAIN "
    with db.engine.connect() as connection:
        rows = connection.exec_driver_sql(prefix + statement, parameters).all()
    return [str(row[-1]) for row in rows]


def timed(db: Database, user: str, query: LibraryQuery, runs: int) -> tuple[list[float], list[float]]:
    """Wall and CPU milliseconds per page, each sorted (CPU: this process's; SQLite's work is in
    it, a PostgreSQL server's is not)."""
    samples, cpu = [], []
    for _ in range(runs):
        started, started_cpu = time.perf_counter(), time.process_time()
        listing.page(db, user, query, max_limit=200, sign=SIGNER.for_owner(user))
        samples.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
    return sorted(samples), sorted(cpu)


# --- serving content ----------------------------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(port: int, path: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server on {port} exited")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("HEAD", path)
            if connection.getresponse().status < 500:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server on {port} did not answer")


def fetch(port: int, path: str, headers: dict[str, str], ranges: list[tuple[int, int]] | None, repeat: int) -> int:
    """GET ``path`` on one keep-alive connection (whole, ``repeat`` times, or each range);
    returns the bytes read (read into one buffer, as cheaply as Python can)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    buffer = memoryview(bytearray(1 << 20))
    total = 0
    asks = [None] * repeat if ranges is None else ranges
    for ask in asks:
        extra = {} if ask is None else {"Range": f"bytes={ask[0]}-{ask[1] - 1}"}
        connection.request("GET", path, headers={**headers, **extra})
        response = connection.getresponse()
        assert response.status in (200, 206), (response.status, response.read()[:200])
        while read := response.readinto(buffer):
            total += read
    connection.close()
    return total


#: 1 MiB ranges asked per round, over both connections (256 took ~0.1 s: too short to be fair on a shared machine)
RANGES = 1024


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far (``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(port: int, path: str, headers: dict[str, str], size: int, mode: str) -> float:
    """MB/s over two parallel connections."""
    rng = random.Random(3)
    results: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        if mode == "whole":
            got = fetch(port, path, headers, None, 2)
        elif mode == "seeks":  # what a player sends: bytes=N- from where it seeks to, read to the end
            got = fetch(port, path, headers, [(rng.randrange(0, size // 2), size) for _ in range(8)], 0)
        else:
            starts = [rng.randrange(0, size - (1 << 20)) for _ in range(RANGES // 2)]
            got = fetch(port, path, headers, [(s, s + (1 << 20)) for s in starts], 0)
        with lock:
            results.append(got)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    return sum(results) / seconds / 1e6


def store_one_video(db: Database, blobs: BlobStore, source: Path) -> tuple[str, str, str]:
    """A user "bench" with a key, and one completed video of ``source``'s bytes (stored from a
    copy, so ``source`` stays): (key, user id, video id). The serving benches' library."""
    from vidgate.auth import create_key

    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    copy = source.with_name(source.name + ".copy")
    shutil.copyfile(source, copy)
    blobs.put_file(digest, copy)
    key, _ = create_key(db, "bench")
    with db.session() as session:
        user_id = str(session.scalar(text("SELECT id FROM user_account WHERE username = 'bench'")))
        content_id, video_id = str(uuid.uuid4()), str(uuid.uuid4())
        content = {
            "id": content_id,
            "content_hash": digest,
            "file_size": source.stat().st_size,
            "storage_key": digest,
            "media_info": {"container": "mp4"},
            "status": AnalysisStatus.COMPLETED,
        }
        session.execute(insert(Content), [content])
        video = {
            "id": video_id,
            "user_id": user_id,
            "content_id": content_id,
            "filename": "bench.mp4",
            "status": VideoStatus.COMPLETED,
        }
        session.execute(insert(Video), [video])
    return key, user_id, video_id


def serve_bench(mib: int, rounds: int, compare_src: str | None = None, py_spy: Path | None = None) -> None:
    from vidgate.storage import LocalBlobStore

    env_base = {k: v for k, v in os.environ.items() if not k.startswith(("VIDGATE_", "DATABASE_", "STORAGE_"))}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        source = Path(tmp) / "file.bin"
        with source.open("wb") as out:
            for _ in range(mib):
                out.write(os.urandom(1 << 20))
        db = Database(f"sqlite:///{data / 'vidgate.db'}")
        migrate.upgrade(db)
        key, user_id, video_id = store_one_video(db, LocalBlobStore(data / "storage"), source)
        size = source.stat().st_size
        db.dispose()
        secret = "bench-secret"
        signed = UrlSigner(secret.encode(), 3600).urls(video_id, str(user_id)).content
        ports = {
            "vidgate": free_port(),
            "bare": free_port(),
            "sendfile": free_port(),
            "asgi": free_port(),
            "other": free_port(),
        }
        if compare_src:  # the same library for the other version (its own copy: each serve runs its sweeps)
            shutil.copytree(data, Path(tmp) / "data-other")
        vidgate_env = {
            **env_base,
            "VIDGATE_DATA_DIR": str(data),
            "AUTH_CREATE_DEV_KEY": "false",
            "LIBRARY_URL_SECRET": secret,
            "VIDGATE_LOG_LEVEL": "warning",
        }
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "vidgate", "serve", "--host", "127.0.0.1", "--port", str(ports["vidgate"])],
                env=vidgate_env,
                cwd=tmp,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "bench.sendfile_app:app",
                    "--loop",
                    "uvloop",
                    "--http",
                    "httptools",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(ports["bare"]),
                    "--log-level",
                    "warning",
                ],
                env={**env_base, "BENCH_FILE": str(source)},
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
            subprocess.Popen(
                [sys.executable, str(ROOT / "bench" / "sendfile_app.py"), "--port", str(ports["sendfile"])],
                env={**env_base, "BENCH_FILE": str(source)},
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
            subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "bench" / "sendfile_app.py"),
                    "--uvicorn-zerocopy",
                    "--port",
                    str(ports["asgi"]),
                ],
                env={**env_base, "BENCH_FILE": str(source)},
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
        ]
        if compare_src:
            other_env = {**vidgate_env, "VIDGATE_DATA_DIR": str(Path(tmp) / "data-other"), "PYTHONPATH": compare_src}
            command = [sys.executable, "-m", "vidgate", "serve", "--host", "127.0.0.1", "--port", str(ports["other"])]
            processes.append(
                subprocess.Popen(command, env=other_env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        try:
            content_path = f"/v1/videos/{video_id}/content"
            if compare_src:
                wait_healthy(ports["other"], "/health", processes[4])
            wait_healthy(ports["vidgate"], "/health", processes[0])
            wait_healthy(ports["bare"], "/file", processes[1])
            wait_healthy(ports["sendfile"], "/file", processes[2])
            wait_healthy(ports["asgi"], "/stored", processes[3])
            pids = [process.pid for process in processes]
            rows = {
                "bare zero-copy sendfile (asyncio)": (ports["sendfile"], "/file", {}, pids[2]),
                "bare FileResponse": (ports["bare"], "/file", {}, pids[1]),
                "bare StoredFileResponse (vidgate's)": (ports["bare"], "/stored", {}, pids[1]),
                "bare StoredFileResponse, zero-copy protocol": (ports["asgi"], "/stored", {}, pids[3]),
                "vidgate, key header": (ports["vidgate"], content_path, {"X-API-Key": key}, pids[0]),
                "vidgate, signed URL": (ports["vidgate"], signed, {}, pids[0]),
            }
            if compare_src:
                rows[f"{compare_src}, key header"] = (ports["other"], content_path, {"X-API-Key": key}, pids[4])
                rows[f"{compare_src}, signed URL"] = (ports["other"], signed, {}, pids[4])
            if py_spy is not None:  # one more, unmeasured, pass of vidgate's 1 MiB ranges under py-spy
                spy = [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw", "--rate", "1000"]
                recorder = subprocess.Popen([*spy, "--pid", str(processes[0].pid), "-o", str(py_spy)])
                time.sleep(1)
                for _ in range(8):
                    throughput(ports["vidgate"], content_path, {"X-API-Key": key}, size, "ranges")
                recorder.send_signal(signal.SIGINT)
                recorder.wait(timeout=30)
            bare, kernel = "bare FileResponse", "bare zero-copy sendfile (asyncio)"
            best: dict[tuple[str, str], float] = {}
            #: each round's MB/s over the zero-copy sendfile's in the same round and mode (the two
            #: measured seconds apart, so under about the same load of the shared machine)
            same_round: dict[tuple[str, str], list[float]] = {}
            cpu_per_range: dict[str, list[float]] = {name: [] for name in rows}
            for round_number in range(rounds):
                shift = round_number % len(rows)
                order = list(rows)[shift:] + list(rows)[:shift]
                for mode in ("whole", "seeks", "ranges"):
                    speeds: dict[str, float] = {}
                    for name in order:
                        port, path, headers, pid = rows[name]
                        cpu_before = process_cpu(pid)
                        speeds[name] = throughput(port, path, headers, size, mode)
                        if mode == "ranges":
                            cpu_per_range[name].append((process_cpu(pid) - cpu_before) / RANGES * 1e6)
                        best[(name, mode)] = max(best.get((name, mode), 0.0), speeds[name])
                    for name, speed in speeds.items():
                        same_round.setdefault((name, mode), []).append(speed / speeds[kernel])
            print(f"\nServing a {mib} MiB file: best of {rounds} rounds, MB/s over 2 connections")
            print("(share of the bare FileResponse's / of the zero-copy sendfile's best; the median over the")
            print("rounds of the share of the sendfile's in the same round), and the server's CPU per 1 MiB")
            print("range (user + system, median of the rounds; the client's is not in it)")
            print(f"| server | whole file (x4) | seeks: bytes=N- (x16) | 1 MiB ranges (x{RANGES}) | CPU µs/range |")
            print("|---|---:|---:|---:|---:|")
            for name in rows:
                cells = [
                    f"{best[(name, mode)]:.0f} ({best[(name, mode)] / best[(bare, mode)]:.0%} / "
                    f"{best[(name, mode)] / best[(kernel, mode)]:.0%}; "
                    f"{statistics.median(same_round[(name, mode)]):.0%})"
                    for mode in ("whole", "seeks", "ranges")
                ]
                cells.append(f"{statistics.median(cpu_per_range[name]):.0f}")
                print(f"| {name} | {' | '.join(cells)} |", flush=True)
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--explain", action="store_true", help="print each query plan")
    parser.add_argument("--serve-mib", type=int, default=256, help="size of the served file")
    parser.add_argument("--serve-rounds", type=int, default=5)
    parser.add_argument("--skip-listing", action="store_true", help="only the serving comparison")
    parser.add_argument("--skip-serving", action="store_true", help="only the listing")
    parser.add_argument(
        "--compare-src",
        help="the src directory of another checkout (e.g. of main): its vidgate serves too, as rows of its own",
    )
    parser.add_argument(
        "--py-spy", type=Path, help="a raw py-spy profile of vidgate serve during one extra pass of 1 MiB ranges"
    )
    args = parser.parse_args()
    if not args.skip_listing:
        listing_bench(args)
    if not args.skip_serving:
        serve_bench(args.serve_mib, args.serve_rounds, args.compare_src, args.py_spy)


def listing_bench(args: argparse.Namespace) -> None:
    others = f"+{args.videos // 10} and +{args.videos // 20} of two other users"
    print(f"{args.videos} videos of the caller ({others}); page of {PAGE};")
    print(f"{args.runs} runs each; milliseconds per page (signed URLs included)\n")
    print("| database | filter | rows | p50 | p99 | max | CPU p50 | CPU p99 |\n|---|---|---:|---:|---:|---:|---:|---:|")
    plans: list[str] = []
    with databases() as dbs:
        for label, db in dbs:
            facts = fill(db, args.videos, random.Random(7))
            user = facts["user"]
            for name, query in queries(facts):
                if query.cursor == "deep":
                    query = query.model_copy(update={"cursor": deep_cursor(db, user, 1000)})
                rows = len(listing.page(db, user, query, max_limit=200).items)
                samples, cpu = timed(db, user, query, args.runs)
                p50, p99 = statistics.median(samples), samples[max(0, int(len(samples) * 0.99) - 1)]
                cpu50, cpu99 = statistics.median(cpu), cpu[max(0, int(len(cpu) * 0.99) - 1)]
                print(
                    f"| {label} | {name} | {rows} | {p50:.2f} | {p99:.2f} | {samples[-1]:.2f} "
                    f"| {cpu50:.2f} | {cpu99:.2f} |",
                    flush=True,
                )
                if args.explain:
                    plans.append(f"\n{label}: {name}\n  " + "\n  ".join(explain(db, user, query)))
    for plan in plans:
        print(plan)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} (2 cores; wall times include waiting for one)")


if __name__ == "__main__":
    main()
