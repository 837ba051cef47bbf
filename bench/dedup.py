"""How long the exact-dedup decision takes once a file's SHA-256 is known.

    .venv/bin/python bench/dedup.py [--videos 100000] [--lookups 2000]

Fills a fresh SQLite file and a fresh PostgreSQL database (127.0.0.1:5432) with ``--videos``
stored contents, their owners' videos and upload sessions, then times, in one transaction
each, what completing an upload does: find the content by hash and the owner's video of it
(locking both rows) and decide with :func:`vidgate.dedup.decide`. Baseline in the same run:
fetching a video by primary key, the cheapest query there is. Goal: well under 50 ms.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from sqlalchemy import insert, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.databases import databases

from vidgate import dedup
from vidgate.db import migrate
from vidgate.db.engine import Database
from vidgate.db.models import AnalysisStatus, Content, SessionStatus, UploadSession, Video, VideoStatus, utcnow


def fill(db: Database, count: int) -> list[tuple[str, str]]:
    migrate.upgrade(db)
    now = utcnow()
    rows: list[tuple[str, str]] = []
    with db.session() as session:
        for start in range(0, count, 5000):
            contents, videos, sessions = [], [], []
            for index in range(start, min(count, start + 5000)):
                video_id, content_id = str(uuid.uuid4()), str(uuid.uuid4())
                digest = hashlib.sha256(str(index).encode()).hexdigest()
                rows.append((video_id, digest))
                contents.append(
                    dict(
                        id=content_id,
                        content_hash=digest,
                        file_size=1000,
                        storage_key=digest,
                        media_info={},
                        status=AnalysisStatus.COMPLETED,
                        analyses=1,
                        created_at=now,
                    )
                )
                videos.append(
                    dict(
                        id=video_id,
                        user_id="u",
                        content_id=content_id,
                        status=VideoStatus.COMPLETED,
                        priority=5,
                        created_at=now,
                        updated_at=now,
                        processing_options={},
                        progress=100.0,
                        attempts=1,
                    )
                )
                sessions.append(
                    dict(
                        id=str(uuid.uuid4()),
                        session_id=uuid.uuid4().hex,
                        filename="a.mp4",
                        total_chunks=1,
                        chunks_received=1,
                        bytes_received=1000,
                        status=SessionStatus.COMPLETED,
                        user_id="u",
                        username="u",
                        upload_options={},
                        priority=5,
                        video_id=video_id,
                        is_duplicate=False,
                        created_at=now,
                        last_updated=now,
                        expires_at=now,
                    )
                )
            session.execute(insert(Content), contents)
            session.execute(insert(Video), videos)
            session.execute(insert(UploadSession), sessions)
    return rows


def primary_key(db: Database, picks: Iterator[tuple[str, str]]) -> Callable[[], object]:
    def action() -> object:
        video_id, _ = next(picks)
        with db.session() as session:
            return session.get(Video, video_id)

    return action


def decision(db: Database, picks: Iterator[tuple[str, str]]) -> Callable[[], object]:
    """What completing an upload does once the hash is known: find the content and the owner's
    video of it, lock both, decide."""

    def action() -> object:
        _, digest = next(picks)
        with db.session() as session:
            content = session.scalar(select(Content).where(Content.content_hash == digest).with_for_update())
            assert content is not None
            video = session.scalar(
                select(Video).where(Video.user_id == "u", Video.content_id == content.id).with_for_update()
            )
            assert video is not None
            return dedup.decide(
                content,
                video,
                content_is_new=False,
                video_is_new=False,
                scope="owner",
                enabled=True,
                priority=5,
                options={},
                now=utcnow(),
            )

    return action


def timed(action: Callable[[], object], times: int) -> list[float]:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=2000)
    args = parser.parse_args()
    print(f"{args.videos} stored videos, {args.lookups} lookups each; milliseconds per decision\n")
    print(f"{'database':<12}{'what':<34}{'p50':>8}{'p99':>8}{'max':>8}")
    with databases() as dbs:
        for label, db in dbs:
            rows = fill(db, args.videos)
            picks = [random.choice(rows) for _ in range(args.lookups)]
            for name, action in (
                ("baseline: row by primary key", primary_key(db, iter(picks))),
                ("dedup: by SHA-256 + decide", decision(db, iter(picks))),
            ):
                samples = sorted(timed(action, args.lookups))
                p50 = statistics.median(samples)
                p99 = samples[int(len(samples) * 0.99) - 1]
                print(f"{label:<12}{name:<34}{p50:>8.3f}{p99:>8.3f}{samples[-1]:>8.3f}")


if __name__ == "__main__":
    main()
