"""The dispatcher: the ``video`` table is the queue's outbox, and a sweep empties it.

One round (:func:`sweep`) runs in every ``vidgate serve`` (every
``PROCESSING_DISPATCH_INTERVAL_SECONDS``, sooner while the broker is unreachable) and on the
Celery beat schedule:

1. a processing job whose lease ran out (its worker died whole, or its process is frozen) is queued again;
2. a video handed to the broker but not started within ``PROCESSING_DISPATCH_TIMEOUT_SECONDS``
   (Redis restarted empty, was flushed or failed over) counts as not handed over;
3. every queued video not handed over is offered to the broker;
4. a batch of stored videos is matched against newly imported hash-bank entries.

Handing a video over twice is harmless: a job runs only under the video's current lease
(:mod:`vidgate.processing.lease`), so the copy that comes second finds nothing to do.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from pydantic import BaseModel
from sqlalchemy import select, update

from vidgate import metrics
from vidgate.db.engine import Database
from vidgate.db.models import Video, VideoStatus, utcnow
from vidgate.moderation import rematch
from vidgate.processing import lease
from vidgate.processing.service import ProcessingService

log = logging.getLogger(__name__)


class SweepReport(BaseModel):
    """What one dispatcher round did."""

    lapsed_leases: int = 0  # processing jobs queued again because their lease ran out
    resent: int = 0  # hand-overs the broker did not start in time, offered again
    dispatched: int = 0  # videos handed to the broker in this round
    broker_reachable: bool = True
    rematched: int = 0  # stored videos matched against newly imported bank entries


def resend_stale(db: Database, timeout_seconds: float) -> list[str]:
    """Mark queued videos handed over more than ``timeout_seconds`` ago as not handed over."""
    is_stale = (Video.status == VideoStatus.QUEUED, Video.dispatched_at < utcnow() - timedelta(seconds=timeout_seconds))
    with db.reading() as session:  # a round with none takes no write lock
        if session.scalar(select(Video.id).where(*is_stale).limit(1)) is None:
            return []
    with db.session() as session:
        stale = session.scalars(update(Video).where(*is_stale).values(dispatched_at=None).returning(Video.id)).all()
    for video_id in stale:
        log.warning(
            "video %s was handed to the broker over %.0f s ago and has not started; handing it over again",
            video_id,
            timeout_seconds,
            extra={"video_id": video_id, "event": "dispatch_timeout"},
        )
    return list(stale)


def sweep(processing: ProcessingService) -> SweepReport:
    """One dispatcher round (see the module docstring)."""
    settings = processing.settings.processing
    lapsed = lease.reclaim_lapsed(processing.db, settings.job_timeout_seconds)
    resent = resend_stale(processing.db, settings.dispatch_timeout_seconds)
    metrics.REDISPATCHED.labels("lease_lapsed").inc(len(lapsed))
    metrics.REDISPATCHED.labels("dispatch_timeout").inc(len(resent))
    dispatched = processing.dispatch_pending() if processing.queue is not None else 0
    return SweepReport(
        lapsed_leases=len(lapsed),
        resent=len(resent),
        dispatched=dispatched,
        broker_reachable=processing.broker_reachable,
        rematched=rematch_banks(processing),
    )


def rematch_banks(processing: ProcessingService) -> int:
    """4. one bounded step of matching stored videos against newly imported bank entries
    (:mod:`vidgate.moderation.rematch`); a failure is logged, never stops the sweep."""
    try:
        return rematch.run_round(processing.db, processing.events, processing.settings.moderation).contents
    except Exception:
        log.exception("re-matching stored videos against hash banks failed; the next round tries again")
        return 0


async def run_dispatcher(processing: ProcessingService) -> None:
    """Sweep now and then every ``PROCESSING_DISPATCH_INTERVAL_SECONDS``; while the broker is
    unreachable every ``PROCESSING_BROKER_RETRY_SECONDS``, so queued videos go out as soon as it
    is back. A failed round (the database is down) is logged and tried again."""
    settings = processing.settings.processing
    while True:
        try:
            await asyncio.to_thread(sweep, processing)
        except Exception:
            log.exception("dispatching queued videos failed")
        quick = not processing.broker_reachable
        pause = min(settings.broker_retry_seconds, settings.dispatch_interval_seconds) if quick else None
        await asyncio.sleep(pause or settings.dispatch_interval_seconds)
