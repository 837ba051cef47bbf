"""What durable events add to the transaction of the state change they describe.

    .venv/bin/python bench/event_append.py [--sessions 2000] [--rounds 2000]

Every upload progress or state change is one transaction that updates its ``upload_session``
row; since the event store (issue 14) the same transaction also numbers and stores the event
(:meth:`vidgate.events.store.EventStore.append`). This times, on a fresh SQLite file and a
fresh PostgreSQL database, interleaved round by round:
  baseline       the state change alone: update one session row, commit;
  + event        the same transaction with the event appended (counter upsert + insert);
  event alone    a transaction that only appends (what bench/ws_latency.py's synthetic
                 "event store" rows pay per event: they have no state change to ride on).
Prints p50/p99 in milliseconds and what the event adds to the baseline's median.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import insert, update
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.databases import databases

from vidgate.db import migrate
from vidgate.db.engine import Database
from vidgate.db.models import SessionStatus, UploadSession, utcnow
from vidgate.events.schema import UploadProgress, UploadProgressData
from vidgate.events.store import EventStore


def fill(db: Database, count: int) -> list[tuple[str, str]]:
    """``count`` active sessions of 50 users: ``(row id, user id)`` each."""
    migrate.upgrade(db)
    now = utcnow()
    rows = [(str(uuid.uuid4()), f"user-{index % 50}") for index in range(count)]
    with db.session() as tx:
        tx.execute(
            insert(UploadSession),
            [
                dict(
                    id=row_id,
                    session_id=uuid.uuid4().hex,
                    filename="a.mp4",
                    total_chunks=100,
                    chunks_received=0,
                    bytes_received=0,
                    status=SessionStatus.ACTIVE,
                    user_id=user_id,
                    username=user_id,
                    upload_options={},
                    priority=5,
                    created_at=now,
                    last_updated=now,
                    expires_at=now,
                )
                for row_id, user_id in rows
            ],
        )
    return rows


def actions(db: Database, rows: list[tuple[str, str]]) -> dict[str, Callable[[int], None]]:
    store = EventStore(db)

    def change(tx: Session, row_id: str, received: int) -> None:
        tx.execute(
            update(UploadSession)
            .where(UploadSession.id == row_id)
            .values(chunks_received=received, bytes_received=received * 10_485_760, last_updated=utcnow())
        )

    def event(row_id: str, received: int) -> UploadProgress:
        data = UploadProgressData(
            chunks_received=received, total_chunks=100, bytes_received=received * 10_485_760, progress_percentage=1.0
        )
        return UploadProgress(session_id=row_id, data=data)

    def baseline(round_: int) -> None:
        row_id, _ = rows[round_ % len(rows)]
        with db.session() as tx:
            change(tx, row_id, round_)

    def with_event(round_: int) -> None:
        row_id, user_id = rows[round_ % len(rows)]
        with db.session() as tx:
            change(tx, row_id, round_)
            store.append(tx, event(row_id, round_), user_id)

    def event_alone(round_: int) -> None:
        row_id, user_id = rows[round_ % len(rows)]
        with db.session() as tx:
            store.append(tx, event(row_id, round_), user_id)

    return {"baseline (state change)": baseline, "+ event": with_event, "event alone": event_alone}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    print(f"{args.sessions} sessions of 50 users, {args.rounds} rounds (interleaved); ms per transaction\n")
    print(f"{'database':<12}{'transaction':<26}{'p50':>8}{'p99':>8}{'+ over baseline p50':>22}")
    with databases() as dbs:
        for label, db in dbs:
            rows = fill(db, args.sessions)
            runs = actions(db, rows)
            samples: dict[str, list[float]] = {name: [] for name in runs}
            for round_ in range(args.rounds):
                for name, action in runs.items():
                    started = time.perf_counter()
                    action(round_)
                    samples[name].append((time.perf_counter() - started) * 1000)
            base = statistics.median(samples["baseline (state change)"])
            for name, values in samples.items():
                values.sort()
                p50, p99 = statistics.median(values), values[int(len(values) * 0.99) - 1]
                extra = "" if name.startswith("baseline") else f"{p50 - base:+.3f} ms ({(p50 / base - 1) * 100:+.0f} %)"
                print(f"{label:<12}{name:<26}{p50:>8.3f}{p99:>8.3f}{extra:>22}")


if __name__ == "__main__":
    main()
