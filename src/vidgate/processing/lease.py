"""Leases on processing jobs: a job runs only while its worker holds the video's lease.

Celery's ``acks_late`` protects against a dead pool process, but a worker that dies whole
(host loss, OOM kill of the group) leaves its job unacknowledged in Redis until the
visibility timeout, hours later. So the database decides who runs a video:

- :func:`claim` starts an attempt: it increments ``video.attempts`` and sets the lease, only
  if the video is queued (or its previous lease ran out). A duplicate delivery finds the
  video taken and does nothing.
- :class:`LeaseKeeper` renews the lease every ``PROCESSING_LEASE_RENEW_SECONDS`` while the job
  runs; :func:`reclaim_lapsed` (the sweep) queues again a video whose lease ran out.
- A video whose job found its content being analysed by another video's job *waits*: it
  stays ``processing`` with its lease released (``lease_expires_at`` unset, ``lease_holder``
  kept) and runs nothing; the analysing job completes it. Such a video is never queued again
  by the sweep nor taken over (it would re-run and announce its processing twice); if the
  analysing video's worker dies, that video's lease lapses and it is queued again instead.
- The attempt number is the fencing token: every write of a job (progress, result, failure)
  names it, so a late original that wakes up after its job was handed on writes nothing
  (:func:`settle` raises :class:`LeaseLost` and its transaction stores nothing).

Times are the processes' own UTC clocks: hosts must agree to well within the lease (NTP).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, cast

from sqlalchemy import ColumnElement, Connection, Table, and_, bindparam, or_, select, update
from sqlalchemy.orm import Session

from vidgate.db.engine import Database
from vidgate.db.models import Video, VideoStatus, utcnow

log = logging.getLogger(__name__)


def process_name() -> str:
    """This process's default worker name, unique across a fleet: ``vidgate-<pid>@<host>``."""
    return f"vidgate-{os.getpid()}@{socket.gethostname()}"


class LeaseLost(Exception):
    """The job's attempt is no longer the video's current one: stop, write nothing."""


@dataclass(frozen=True)
class Lease:
    """Attempt ``attempt`` of ``video_id``, run by ``holder``."""

    video_id: str
    attempt: int
    holder: str


@dataclass(frozen=True)
class Claim:
    """What :func:`claim` found: a lease to run, or why there is nothing to do."""

    lease: Lease | None
    status: VideoStatus | None = None  # the video's status when not claimed (None: no such video)
    holder: str | None = None  # who holds it, when another job is running it (None: it is waiting)


_VIDEOS = cast(Table, Video.__table__)


def _lapsed(now: Any, started_before: Any) -> ColumnElement[bool]:
    """A processing job nobody renews: its lease ran out (before ``now``), or (a row from before
    leases, which has no holder) it started before ``started_before`` (now less the longest a
    job may take). A waiting video (a holder, no lease) runs no job, so it never lapses. Times
    or bound parameters."""
    return and_(
        _VIDEOS.c.status == VideoStatus.PROCESSING,
        or_(
            _VIDEOS.c.lease_expires_at < now,
            and_(
                _VIDEOS.c.lease_expires_at.is_(None),
                _VIDEOS.c.lease_holder.is_(None),
                _VIDEOS.c.started_at < started_before,
            ),
        ),
    )


def _lapsed_at(now: datetime, job_timeout_seconds: float) -> ColumnElement[bool]:
    return _lapsed(now, now - timedelta(seconds=job_timeout_seconds))


# A job's statements, built once: the ORM's per-call building and its session synchronisation
# of a bulk UPDATE cost more than running them (a job's claim and result, issue 17).
_THIS_ATTEMPT = and_(
    _VIDEOS.c.id == bindparam("video_id"),
    _VIDEOS.c.attempts == bindparam("attempt"),
    _VIDEOS.c.status == VideoStatus.PROCESSING,
)
_SETTLE = update(_VIDEOS).where(_THIS_ATTEMPT).values(lease_expires_at=None)
_RENEW = update(_VIDEOS).where(_THIS_ATTEMPT).values(lease_expires_at=bindparam("until"))
_PROGRESS = update(_VIDEOS).where(_THIS_ATTEMPT).values(stage=bindparam("new_stage"), progress=bindparam("percent"))


def _starting(condition: ColumnElement[bool]) -> Any:
    """``UPDATE video SET <a new attempt> WHERE id = :video_id AND condition RETURNING attempts``."""
    return (
        update(_VIDEOS)
        .where(_VIDEOS.c.id == bindparam("video_id"), condition)
        .values(
            status=VideoStatus.PROCESSING,
            attempts=_VIDEOS.c.attempts + 1,
            lease_holder=bindparam("holder"),
            lease_pid=bindparam("pid"),
            lease_expires_at=bindparam("until"),
            started_at=bindparam("now"),
            stage="starting",
            progress=0.0,
        )
        .returning(_VIDEOS.c.attempts)
    )


_START_QUEUED_OR_LAPSED = _starting(
    or_(_VIDEOS.c.status == VideoStatus.QUEUED, _lapsed(bindparam("now"), bindparam("started_before")))
)
# processing under the lease of a gone process of the same worker (that attempt only)
_START_ORPHANED = _starting(
    and_(
        _VIDEOS.c.status == VideoStatus.PROCESSING,
        _VIDEOS.c.lease_expires_at.is_not(None),
        _VIDEOS.c.attempts == bindparam("attempt"),
        _VIDEOS.c.lease_holder == bindparam("holder"),
        _VIDEOS.c.lease_pid == bindparam("gone_pid"),
    )
)
_CLAIM_STATE = select(
    _VIDEOS.c.status, _VIDEOS.c.lease_holder, _VIDEOS.c.lease_pid, _VIDEOS.c.attempts, _VIDEOS.c.lease_expires_at
).where(_VIDEOS.c.id == bindparam("video_id"))


def claim(session: Session, video_id: str, holder: str, lease_seconds: float, job_timeout_seconds: float) -> Claim:
    """Start the next attempt of ``video_id`` if it is queued, or processing under a lapsed
    lease, or processing under the lease of a process of this same worker that is gone (a
    killed pool process: Celery delivers its job again at once, no need to wait for the lease)."""
    now = utcnow()
    connection = session.connection()
    start = {
        "video_id": video_id,
        "holder": holder,
        "pid": os.getpid(),
        "now": now,
        "until": now + timedelta(seconds=lease_seconds),
    }
    started_before = now - timedelta(seconds=job_timeout_seconds)
    attempt = _start(connection, _START_QUEUED_OR_LAPSED, {**start, "started_before": started_before})
    if attempt is not None:
        return Claim(Lease(video_id, attempt, holder))
    found = connection.execute(_CLAIM_STATE, {"video_id": video_id}).one_or_none()
    if found is None:
        return Claim(None)
    if found.status is VideoStatus.PROCESSING and found.lease_expires_at is None and found.lease_holder is not None:
        return Claim(None, status=found.status, holder=None)  # waiting on another video's analysis
    if (
        found.status is VideoStatus.PROCESSING
        and found.lease_holder == holder
        and found.lease_pid not in (None, os.getpid())
        and not process_alive(found.lease_pid)
    ):
        orphaned = {**start, "attempt": found.attempts, "gone_pid": found.lease_pid}
        attempt = _start(connection, _START_ORPHANED, orphaned)
        if attempt is not None:
            log.warning(
                "processing %s: process %d of this worker, which ran attempt %d, is gone; taking over",
                video_id,
                found.lease_pid,
                found.attempts,
                extra={"video_id": video_id, "event": "lease_taken_over", "attempt": attempt},
            )
            return Claim(Lease(video_id, attempt, holder))
    return Claim(None, status=found.status, holder=found.lease_holder)


def _start(connection: Connection, statement: Any, values: dict[str, Any]) -> int | None:
    """The next attempt's number if the statement's condition held and the attempt started, else None."""
    attempt = connection.execute(statement, values).scalar()
    return None if attempt is None else int(attempt)


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (one of another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _attempt(lease: Lease) -> dict[str, Any]:
    return {"video_id": lease.video_id, "attempt": lease.attempt}


def renew(db: Database, lease: Lease, lease_seconds: float) -> None:
    """Push the lease's end ``lease_seconds`` ahead; :class:`LeaseLost` if the attempt is not current."""
    with db.session() as session:
        until = utcnow() + timedelta(seconds=lease_seconds)
        renewed = session.connection().execute(_RENEW, {**_attempt(lease), "until": until})
        if not renewed.rowcount:
            raise LeaseLost(f"attempt {lease.attempt} of video {lease.video_id} was superseded")


def settle(session: Session, lease: Lease) -> None:
    """The start of a job's last write (result, failure, retry), in that write's transaction:
    locks the video row, releases the lease, and raises :class:`LeaseLost` (rolling the whole
    transaction back) if the attempt is no longer current, so a late original stores nothing."""
    settled = session.connection().execute(_SETTLE, _attempt(lease))
    if not settled.rowcount:
        raise LeaseLost(f"attempt {lease.attempt} of video {lease.video_id} was superseded")


def write_progress(db: Database, lease: Lease, stage: str, percent: float) -> None:
    """Record progress of the current attempt only; :class:`LeaseLost` for a superseded one."""
    with db.session() as session:
        values = {**_attempt(lease), "new_stage": stage, "percent": percent}
        written = session.connection().execute(_PROGRESS, values)
        if not written.rowcount:
            raise LeaseLost(f"attempt {lease.attempt} of video {lease.video_id} was superseded")


@dataclass(frozen=True)
class Reclaimed:
    video_id: str
    attempt: int
    holder: str | None


def reclaim_lapsed(db: Database, job_timeout_seconds: float, limit: int = 100) -> list[Reclaimed]:
    """Queue again (for the dispatcher to hand over) every processing job whose lease ran out."""
    now = utcnow()
    with db.reading() as session:  # a read: each row is taken back only if still lapsed (below)
        rows = session.execute(
            select(Video.id, Video.attempts, Video.lease_holder)
            .where(_lapsed_at(now, job_timeout_seconds))
            .limit(limit)
        ).all()
    reclaimed: list[Reclaimed] = []
    for video_id, attempt, holder in rows:
        with db.session() as session:
            # Only that attempt, and only if still lapsed: a job that renewed or ended meanwhile keeps its row.
            changed = session.execute(
                update(Video)
                .where(Video.id == video_id, Video.attempts == attempt, _lapsed_at(utcnow(), job_timeout_seconds))
                .values(status=VideoStatus.QUEUED, queued_at=utcnow(), dispatched_at=None, lease_expires_at=None)
            )
        if getattr(changed, "rowcount", 0):
            reclaimed.append(Reclaimed(video_id, int(attempt), holder))
            log.warning(
                "processing %s: the lease of attempt %d (worker %s) ran out; queued again",
                video_id,
                attempt,
                holder,
                extra={"video_id": video_id, "event": "lease_lapsed", "attempt": attempt, "lease_holder": holder},
            )
    return reclaimed


class LeaseKeeper:
    """Renews a lease in a background thread while its job runs.

    ``lost`` is set once a renewal finds the attempt superseded; the job checks it at every
    progress report and stops. A renewal that fails for another reason (the database is
    unreachable) is logged and tried again at the next interval: if the outage outlasts the
    lease, the sweep hands the job on and the next renewal finds it lost."""

    def __init__(self, db: Database, lease: Lease, lease_seconds: float, renew_seconds: float) -> None:
        self.db = db
        self.lease = lease
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"vidgate-lease-{lease.video_id[:8]}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=self.renew_seconds + 30)

    def check(self) -> None:
        """Raise :class:`LeaseLost` if a renewal found the attempt superseded."""
        if self.lost.is_set():
            raise LeaseLost(f"attempt {self.lease.attempt} of video {self.lease.video_id} was superseded")

    def _run(self) -> None:
        while not self._stop.wait(self.renew_seconds):
            try:
                renew(self.db, self.lease, self.lease_seconds)
            except LeaseLost:
                self.lost.set()
                return
            except Exception as exc:
                log.warning(
                    "processing %s: renewing the lease of attempt %d failed (tried again in %.1f s): %s",
                    self.lease.video_id,
                    self.lease.attempt,
                    self.renew_seconds,
                    exc,
                    extra={"video_id": self.lease.video_id, "attempt": self.lease.attempt},
                )
