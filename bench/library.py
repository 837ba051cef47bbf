"""How long one page of GET /v1/videos takes in a big library, with each filter.

    .venv/bin/python bench/library.py [--videos 100000] [--runs 300] [--explain]

Fills a fresh SQLite file and a fresh PostgreSQL database (127.0.0.1:5432) with ``--videos``
videos of one user and a tenth as many of another, interleaved in time (each its own
``video`` row over a content; the keyset indexes lead with the owner): upload sessions,
statuses (90 % completed, 5 % failed, 3 % processing, 2 % queued), review states (5 %
approved, 2 % rejected, 1 % escalated), file names from 20 words (5 % each) with 0.1 %
holding a rare word. Then times :func:`vidgate.library.listing.page` (what the endpoint
runs: the query, its session, the response models) for a page of 50 with each filter; ANALYZE
runs first, as autovacuum / ``PRAGMA optimize`` would. ``--explain`` prints each query plan.
Goal: p99 < 20 ms.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import event, insert, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

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

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
WORDS = [f"w{i:02d}" for i in range(20)]
STATUSES = [VideoStatus.COMPLETED] * 90 + [VideoStatus.FAILED] * 5 + [VideoStatus.PROCESSING] * 3
STATUSES += [VideoStatus.QUEUED] * 2
REVIEWS: list[ReviewDecision | None] = (
    [ReviewDecision.APPROVED] * 5 + [ReviewDecision.REJECTED] * 2 + [ReviewDecision.ESCALATED] + [None] * 92
)
PAGE = 50


@contextmanager
def databases() -> Iterator[list[tuple[str, Database]]]:
    name = f"vidgate_bench_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp, psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        dbs = [
            ("SQLite", Database(f"sqlite:///{tmp}/bench.db")),
            ("PostgreSQL", Database(f"{ADMIN.rsplit('/', 1)[0]}/{name}")),
        ]
        try:
            yield dbs
        finally:
            for _, db in dbs:
                db.dispose()
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fill(db: Database, count: int, rng: random.Random) -> dict[str, Any]:
    """Returns what the filters need: the user, a content hash, the time span."""
    migrate.upgrade(db)
    start = utcnow() - timedelta(days=365)
    users = {"lib": str(uuid.uuid4()), "other": str(uuid.uuid4())}
    picked_hash = ""
    with db.session() as session:
        session.execute(insert(UserAccount), [{"id": uid, "username": name} for name, uid in users.items()])
        total = count + count // 10
        owners = [users["lib"]] * count + [users["other"]] * (count // 10)
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


def timed(db: Database, user: str, query: LibraryQuery, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        listing.page(db, user, query, max_limit=200)
        samples.append((time.perf_counter() - started) * 1000)
    return sorted(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--explain", action="store_true", help="print each query plan")
    args = parser.parse_args()
    print(f"{args.videos} videos of the caller (+{args.videos // 10} of another user); page of {PAGE};")
    print(f"{args.runs} runs each; milliseconds per page\n")
    print("| database | filter | rows | p50 | p99 | max |\n|---|---|---:|---:|---:|---:|")
    plans: list[str] = []
    with databases() as dbs:
        for label, db in dbs:
            facts = fill(db, args.videos, random.Random(7))
            user = facts["user"]
            for name, query in queries(facts):
                if query.cursor == "deep":
                    query = query.model_copy(update={"cursor": deep_cursor(db, user, 1000)})
                rows = len(listing.page(db, user, query, max_limit=200).items)
                samples = timed(db, user, query, args.runs)
                p50 = statistics.median(samples)
                p99 = samples[max(0, int(len(samples) * 0.99) - 1)]
                print(f"| {label} | {name} | {rows} | {p50:.2f} | {p99:.2f} | {samples[-1]:.2f} |", flush=True)
                if args.explain:
                    plans.append(f"\n{label}: {name}\n  " + "\n  ".join(explain(db, user, query)))
    for plan in plans:
        print(plan)


if __name__ == "__main__":
    main()
