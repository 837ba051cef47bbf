"""How soon processing resumes after a Redis outage ends.

    .venv/bin/python bench/redis_resume.py [--outage 20] [--rounds 3] [--backend postgresql]

An API server (in this process, the default PROCESSING_DISPATCH_INTERVAL_SECONDS) and one real
`vidgate worker` share a Redis of this script's own. Each round stops Redis for ``--outage``
seconds while three videos are uploaded (they wait as queued), starts it again, and measures
from the moment Redis answers again to the first of those videos starting on the worker
(``resume``) and to all three completed. Goal (issue 14): resume within ~2 s.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.cluster import Cluster, cluster, own_redis
from tests.conftest import free_port
from tests.media import make_video

from vidgate.db.models import Video, VideoStatus, utcnow

RedisStarter = Callable[[], "subprocess.Popen[bytes]"]


@dataclass
class Round:
    redis: subprocess.Popen[bytes]  # the Redis started at the end of the round
    resume: float  # Redis back -> the first video uploaded during the outage starts
    done: float  # Redis back -> all three completed


def _wait_all(running: Cluster, ids: list[str], timeout: float = 120) -> datetime:
    deadline = time.monotonic() + timeout
    while True:
        with running.server.db.session() as session:
            done = session.scalar(select(func.count()).where(Video.id.in_(ids), Video.status == VideoStatus.COMPLETED))
            last = session.scalar(select(func.max(Video.finished_at)).where(Video.id.in_(ids)))
        if done == len(ids) and last is not None:
            return last
        if time.monotonic() > deadline:
            raise SystemExit(f"videos did not complete:\n{running.worker_logs()}")
        time.sleep(0.05)


def one_round(running: Cluster, redis: subprocess.Popen[bytes], restart: RedisStarter, outage: float, n: int) -> Round:
    """Stop Redis, upload three videos during the outage, start Redis again; the timings."""
    folder = running.server.settings.server.data_dir
    clips = [make_video(folder / f"r{n}-{i}.mp4", frames=10, seed=1000 * n + i) for i in range(3)]
    redis.terminate()
    redis.wait(timeout=10)
    ends = time.monotonic() + outage
    ids = [running.upload(clip) for clip in clips]
    time.sleep(max(0.0, ends - time.monotonic()))
    restarted = restart()  # returns once Redis answers PING
    back = utcnow()
    last = _wait_all(running, ids)
    with running.server.db.session() as session:
        first = session.scalar(select(func.min(Video.started_at)).where(Video.id.in_(ids)))
    assert first is not None
    return Round(restarted, (first - back).total_seconds(), (last - back).total_seconds())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outage", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="postgresql")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)  # the outage makes the in-process server log a lot
    port = free_port()
    rows: list[Round] = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        directory = Path(tmp)
        redis_dir = directory / "redis"
        redis_dir.mkdir()

        def restart() -> subprocess.Popen[bytes]:
            return stack.enter_context(own_redis(port, redis_dir))

        redis = restart()
        # the default dispatcher interval (the tests' cluster uses a short one)
        running = stack.enter_context(
            cluster(args.backend, directory, f"redis://127.0.0.1:{port}/0", dispatch_interval_seconds=5.0)
        )
        running.start_worker()
        _wait_all(running, [running.upload(make_video(directory / "warm.mp4", frames=10, seed=7))])
        for n in range(1, args.rounds + 1):
            rows.append(one_round(running, redis, restart, args.outage, n))
            redis = rows[-1].redis
    print(f"Redis stopped {args.outage:.0f} s, 3 videos uploaded meanwhile ({args.backend}).")
    print("Seconds after Redis answers again:")
    print(f"{'round':>5} | {'first job starts':>16} | {'all 3 done':>10}")
    print(f"{'-' * 5}-+-{'-' * 16}-+-{'-' * 10}")
    for n, row in enumerate(rows, 1):
        print(f"{n:>5} | {row.resume:>16.2f} | {row.done:>10.2f}")


if __name__ == "__main__":
    main()
