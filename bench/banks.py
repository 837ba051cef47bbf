"""How long matching one processed video against every hash bank takes as banks grow.

    .venv/bin/python bench/banks.py [--hashes 1000000] [--frames 60] [--queries 20]

Fills a fresh SQLite file and a fresh PostgreSQL database (127.0.0.1:5432) with ``--hashes``
random PDQ frame hashes in entries of ``--frames`` frames (bank videos), then times
:func:`vidgate.moderation.banks.match_video` for videos of ``--frames`` frames: unrelated ones
(random hashes: nothing matches, every candidate is looked up and scored), copies of a bank
entry (each frame with 12 random bits flipped) and far copies (each frame 28-31 bits away, no
band equal in most frames: only exact search finds them). Two ways, both exact:

- ``memory``: the process's bank index (the default while banks hold at most
  ``MODERATION_BANK_INDEX_MAX_HASHES`` frames), after its one build (timed separately);
- ``sql``: the band probes on the indexed band columns (what larger banks use), the baseline.

Goal: < 50 ms per video with one million bank hashes. One core is pinned for the matching
process (``os.sched_setaffinity``) when the machine has more than one.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.databases import databases

from vidgate.db import migrate
from vidgate.db.engine import Database
from vidgate.db.models import HashBank, HashBankEntry, HashBankFrame
from vidgate.moderation.bankindex import CACHE
from vidgate.moderation.banks import _bands, _words, match_video, touch
from vidgate.moderation.models import VpdqFeature

BATCH = 20_000


def random_hash(rng: random.Random) -> str:
    return f"{rng.getrandbits(256):064x}"


def flip(value: str, bits: int, rng: random.Random) -> str:
    number = int(value, 16)
    for bit in rng.sample(range(256), bits):
        number ^= 1 << bit
    return f"{number:064x}"


def fill(db: Database, hashes: int, frames: int, seed: int) -> tuple[list[list[str]], float]:
    """Random bank entries; returns a few entries' hashes (to query copies of) and the fill time."""
    rng = random.Random(seed)
    started = time.perf_counter()
    kept: list[list[str]] = []
    with db.session() as session:
        bank = HashBank(name="bench")
        session.add(bank)
        session.flush()
        entries = hashes // frames
        session.execute(
            insert(HashBankEntry),
            [
                {"id": i + 1, "bank_id": bank.id, "name": f"e{i}", "kind": "vpdq", "frames": frames}
                for i in range(entries)
            ],
        )
        rows = []
        for entry in range(1, entries + 1):
            values = [random_hash(rng) for _ in range(frames)]
            if entry % max(1, entries // 10) == 0:
                kept.append(values)
            for value in values:
                row: dict[str, int] = {"entry_id": entry, "quality": 100}
                row.update({f"w{i}": w for i, w in enumerate(_words(value))})
                row.update({f"b{i}": b for i, b in enumerate(_bands(value))})
                rows.append(row)
            if len(rows) >= BATCH:
                session.execute(insert(HashBankFrame), rows)
                rows = []
        if rows:
            session.execute(insert(HashBankFrame), rows)
        touch(session)
    with db.engine.connect() as connection:  # planner statistics, as a running server would have
        connection.exec_driver_sql("ANALYZE")
        connection.commit()
    return kept, time.perf_counter() - started


def features(values: list[str]) -> list[VpdqFeature]:
    return [VpdqFeature(frame_number=i, quality=100, hash=v, timestamp=float(i)) for i, v in enumerate(values)]


def far_copy(value: str, rng: random.Random) -> str:
    """28-31 bits away, spread so that most of the sixteen 16-bit bands differ."""
    number = int(value, 16)
    bits = rng.randint(28, 31)
    bands = rng.sample(range(16), 16)
    chosen = [(band, rng.randrange(16)) for band in bands] + [(band, rng.randrange(16)) for band in bands]
    flipped: set[int] = set()
    for band, bit in chosen:
        if len(flipped) == bits:
            break
        flipped.add(16 * band + bit)
    for bit in flipped:
        number ^= 1 << bit
    return f"{number:064x}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hashes", type=int, default=1_000_000)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--queries", type=int, default=20)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    rng = random.Random(7)
    rows = []
    builds = []
    with databases() as dbs:
        for label, db in dbs:
            migrate.upgrade(db)
            kept, seconds = fill(db, args.hashes, args.frames, seed=1)
            print(f"{label}: {args.hashes} bank hashes filled in {seconds:.0f} s", flush=True)
            unrelated = [features([random_hash(rng) for _ in range(args.frames)]) for _ in range(args.queries)]
            copies = [features([flip(v, 12, rng) for v in kept[i % len(kept)]]) for i in range(args.queries)]
            far = [features([far_copy(v, rng) for v in kept[i % len(kept)]]) for i in range(args.queries)]
            started = time.perf_counter()
            index = CACHE.get(db, args.hashes)
            assert index is not None
            builds.append((label, time.perf_counter() - started, index.nbytes))
            for way, limit in (("memory", args.hashes), ("sql", 0)):
                for kind, queries, expect in (
                    ("unrelated", unrelated, 0),
                    ("copy (12 bits)", copies, 1),
                    ("far copy (28-31)", far, 1),
                ):
                    match_video(db, queries[0], max_index_hashes=limit)  # warm caches
                    times, cpu, found = [], [], 0
                    for query in queries:
                        started, started_cpu = time.perf_counter(), time.process_time()
                        found += len(match_video(db, query, max_index_hashes=limit)) == expect
                        times.append((time.perf_counter() - started) * 1000)
                        cpu.append((time.process_time() - started_cpu) * 1000)
                    rows.append(
                        (
                            label,
                            way,
                            kind,
                            statistics.median(times),
                            max(times),
                            statistics.median(cpu),
                            found,
                            len(queries),
                        )
                    )
                    print(f"  {label} {way} {kind}: {statistics.median(times):.1f} ms", flush=True)
            CACHE.drop(db)
    print(
        f"\n{args.hashes} bank hashes ({args.hashes // args.frames} entries of {args.frames} frames); "
        f"queries of {args.frames} frames; one core\n"
    )
    print(f"{'database':<12}{'search':<8}  {'query':<18}{'median ms':>10}{'max ms':>9}{'CPU ms':>8}{'correct':>9}")
    for label, way, kind, median, worst, cpu_ms, found, total in rows:
        print(f"{label:<12}{way:<8}  {kind:<18}{median:>10.1f}{worst:>9.1f}{cpu_ms:>8.1f}{found:>6}/{total}")
    print(
        "\nCPU ms: this process's CPU time per match (a PostgreSQL server's is not in it); on a shared "
        f"machine the wall times include waiting for a core (load average now {os.getloadavg()[0]:.1f})."
    )
    print()
    for label, seconds, nbytes in builds:
        print(f"{label}: index built in {seconds:.1f} s (read from the database and sorted), {nbytes / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
