"""Stored videos matched against bank entries imported after they were processed.

A video is matched against every bank when it is processed; a list imported later would never
see it. So an import gives its entries the bank's next revision, and every dispatcher round
(:func:`vidgate.processing.dispatch.sweep`, in each ``vidgate serve`` and on the Celery beat)
calls :func:`run_round`: it takes the first bank with entries newer than its
``rematched_revision``, builds an index of only those entries, and matches the next
``MODERATION_REMATCH_BATCH`` stored analyses against it, reading the vPDQ they hold (nothing is
decoded again). Contents are visited in the order they finished (``finished_at``, id), so one
stored while a pass runs comes after the cursor and is not skipped. The cursor is stored in
``hash_bank``: a restarted process resumes the pass, and when a page comes back short the bank
is done up to the pass's target revision (entries imported meanwhile get a pass of their own).

A new match is added to the stored result (flagged, with its reason) in one transaction with
a ``hash_match`` event to each owner of a completed video of the content, under their own
video's id, so webhooks and sockets carry it as they do for a fresh analysis. A match the
result already names (found when the video was processed, or by a concurrent round) is not
told twice.

``vidgate banks rematch [NAME]`` runs the pending passes to their end at once
(:func:`run_all`), of one bank or of all; with ``--full`` it first makes the bank's every entry
pending again (:func:`restart`: after changing ``MODERATION_MATCH_*``, say), which is safe for
the same reason: what a result already names is not told again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from vidgate.config import ModerationSettings
from vidgate.db.engine import Database
from vidgate.db.models import (
    Content,
    HashBank,
    HashBankEntry,
    Video,
    VideoAnalysisResultRow,
    VideoStatus,
)
from vidgate.events.publisher import EventPublisher
from vidgate.events.schema import HashMatchData, HashMatchEvent
from vidgate.moderation.models import FlagReason, HashMatch, ModerationResult, NsfwResult, VpdqFeature
from vidgate.processing.models import VideoAnalysisResult

log = logging.getLogger(__name__)


@dataclass
class RematchReport:
    bank: str | None = None  # the bank this round worked on (None: nothing pending)
    contents: int = 0  # stored analyses matched in this round
    flagged: int = 0  # contents that gained a match
    done: bool = False  # the bank's pass finished in this round


def add_matches(result: VideoAnalysisResult, matches: list[HashMatch]) -> list[HashMatch]:
    """Add the matches ``result`` does not name yet: flagged, with a reason each; returns them."""
    if result.moderation is None:
        nsfw = NsfwResult(status="unavailable", model="open_nsfw", reason="MODERATION_ENABLED is false", threshold=0)
        result.moderation = ModerationResult(flagged=False, nsfw=nsfw)
    known = {(m.bank, m.entry_id) for m in result.moderation.hash_matches}
    fresh = [m for m in matches if (m.bank, m.entry_id) not in known]
    for match in fresh:
        label = f" ({match.entry_name})" if match.entry_name else ""
        result.moderation.hash_matches.append(match)
        result.moderation.reasons.append(
            FlagReason(
                code="hash_match",
                message=f"matches entry {match.entry_id}{label} of hash bank {match.bank!r}: "
                f"{match.query_match_percent}% of this video's frames, {match.entry_match_percent}% of the entry's",
            )
        )
    if fresh:
        result.moderation.flagged = True
    return fresh


def _flag(db: Database, events: EventPublisher | None, content_id: str, matches: list[HashMatch]) -> bool:
    """Add ``matches`` to the content's stored result and tell each owner, in one transaction
    (the content locked first, as processing takes it)."""
    with db.session() as session:
        session.get_one(Content, content_id, with_for_update=True, populate_existing=True)
        row = session.scalar(
            select(VideoAnalysisResultRow).where(VideoAnalysisResultRow.content_id == content_id).with_for_update()
        )
        if row is None:
            return False
        result = VideoAnalysisResult.model_validate(row.result)
        fresh = add_matches(result, matches)
        if not fresh:
            return False
        row.result = result.model_dump(mode="json")
        owners = session.execute(
            select(Video.id, Video.user_id).where(Video.content_id == content_id, Video.status == VideoStatus.COMPLETED)
        ).all()
        if events is not None:
            for video_id, user_id in sorted(owners, key=lambda o: o[1]):
                _tell(events, session, video_id, user_id, fresh)
    log.info(
        "stored content %s matches newly imported bank entries: %s",
        content_id,
        ", ".join(f"{m.bank}/{m.entry_id}" for m in fresh),
        extra={"content_id": content_id, "event": "bank_rematch_match"},
    )
    return True


def _tell(events: EventPublisher, session: Session, video_id: str, user_id: str, fresh: list[HashMatch]) -> None:
    event = HashMatchEvent(
        video_id=video_id,
        data=HashMatchData(
            matches=[m.model_dump(mode="json") for m in fresh], result_url=f"/v1/videos/{video_id}/result"
        ),
    )
    events.to_user(event, user_id, session)


def _features(stored: dict[str, Any]) -> list[VpdqFeature]:
    hashes = stored.get("hashes") or {}
    return [VpdqFeature.model_validate(f) for f in hashes.get("vpdq") or []]


def run_round(
    db: Database, events: EventPublisher | None, settings: ModerationSettings, bank_name: str | None = None
) -> RematchReport:
    """One bounded step of the re-match (see the module docstring), of the bank ``bank_name``
    only when given."""
    pending = select(HashBank).where(HashBank.rematched_revision < HashBank.revision)
    if bank_name is not None:
        pending = pending.where(HashBank.name == bank_name)
    with db.reading() as session:  # a round with no bank to re-match (nearly all) takes no write lock
        if session.scalar(pending.with_only_columns(HashBank.id).limit(1)) is None:
            return RematchReport()
    with db.session() as session:
        bank = session.scalar(pending.order_by(HashBank.id).limit(1).with_for_update(skip_locked=True))
        if bank is None:
            return RematchReport()
        if bank.rematch_target is None:
            bank.rematch_target = bank.revision
            bank.rematch_after, bank.rematch_cursor = None, None
        bank_id, name, floor, target = bank.id, bank.name, bank.rematched_revision, bank.rematch_target
        after, cursor = bank.rematch_after, bank.rematch_cursor
    # Imported only when a bank has entries to re-match: the bank index is NumPy arrays, which
    # an API process (this round runs in serve's dispatcher) otherwise never needs.
    from vidgate.moderation.bankindex import frames_of, load
    from vidgate.moderation.banks import match_video

    index = load(
        db,
        [frames_of(HashBankEntry.bank_id == bank_id, HashBankEntry.revision > floor, HashBankEntry.revision <= target)],
    )
    page = (
        select(Content.id, Content.finished_at, VideoAnalysisResultRow.result)
        .join(VideoAnalysisResultRow, VideoAnalysisResultRow.content_id == Content.id)
        .where(Content.finished_at.is_not(None))
        .order_by(Content.finished_at, Content.id)
        .limit(settings.rematch_batch)
    )
    if after is not None and cursor is not None:
        page = page.where(or_(Content.finished_at > after, and_(Content.finished_at == after, Content.id > cursor)))
    with db.session() as session:
        rows = session.execute(page).all()
    report = RematchReport(bank=name, contents=len(rows))
    last: tuple[datetime | None, str | None] = (after, cursor)
    for content_id, finished_at, stored in rows:
        last = (finished_at, content_id)
        if not len(index):
            continue
        try:
            parsed = _features(dict(stored))
        except ValidationError:
            continue  # an older result without usable hashes
        matches = match_video(
            db,
            parsed,
            distance=settings.match_distance,
            quality=settings.match_quality,
            percent=settings.match_percent,
            index=index,
        )
        if matches and _flag(db, events, content_id, matches):
            report.flagged += 1
    report.done = len(rows) < settings.rematch_batch
    with db.session() as session:
        values: dict[str, Any]
        if report.done:
            values = {
                "rematched_revision": target,
                "rematch_target": None,
                "rematch_after": None,
                "rematch_cursor": None,
            }
        else:
            values = {"rematch_after": last[0], "rematch_cursor": last[1]}
        session.execute(
            update(HashBank).where(HashBank.id == bank_id, HashBank.rematch_target == target).values(**values)
        )
    if report.flagged or report.done:
        log.info(
            "bank %s re-matched against %d stored videos (%d newly flagged)%s",
            name,
            report.contents,
            report.flagged,
            "; pass done" if report.done else "",
            extra={"event": "bank_rematch", "bank": name},
        )
    return report


def run_all(
    db: Database, events: EventPublisher | None, settings: ModerationSettings, bank_name: str | None = None
) -> list[RematchReport]:
    """Rounds until nothing is pending, of the bank ``bank_name`` only when given (the CLI's
    ``vidgate banks rematch``, and tests)."""
    reports = []
    while (report := run_round(db, events, settings, bank_name)).bank is not None:
        reports.append(report)
    return reports


def restart(db: Database, bank_name: str | None = None) -> list[str]:
    """Make every entry of the bank ``bank_name`` (default: of every bank) pending again, so the
    next rounds match all stored videos against all of them; a pass in progress starts over.
    Returns the names of the banks restarted (none: no such bank)."""
    condition = HashBank.revision > 0
    if bank_name is not None:
        condition = and_(condition, HashBank.name == bank_name)
    with db.session() as session:
        names = session.scalars(
            update(HashBank)
            .where(condition)
            .values(rematched_revision=0, rematch_target=None, rematch_after=None, rematch_cursor=None)
            .returning(HashBank.name)
        ).all()
    return sorted(names)


def bank_exists(db: Database, bank_name: str) -> bool:
    with db.session() as session:
        return session.scalar(select(HashBank.id).where(HashBank.name == bank_name)) is not None
