"""``GET /v1/videos``: the caller's videos, newest first, in keyset pages.

The order is ``(created_at, id)`` descending and a cursor is the last row's pair, so a page
starts strictly after it: videos added meanwhile sort before the first page (they are seen
by starting again), never inside later ones, and nothing is repeated or skipped. The cursor
is opaque to clients (URL-safe base64 of JSON) and checked when it comes back.

Filters are plain conditions on the same query (:func:`conditions`); the moderation work adds
its ``flagged`` condition there.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, and_, column, exists, select, table, tuple_
from sqlalchemy.orm import Session, aliased

from vidgate.db.engine import Database
from vidgate.db.models import Content, ReviewDecision, Video, VideoReviewState, VideoStatus
from vidgate.errors import InvalidCursor, InvalidParameter
from vidgate.library.owners import filename_matches, owned_by
from vidgate.library.reviews import UNREVIEWED
from vidgate.library.signing import SignedUrls

ReviewFilter = Literal["unreviewed", "approved", "rejected", "escalated"]
_HEX64 = re.compile(r"[0-9a-f]{64}")


class LibraryQuery(BaseModel):
    limit: int
    cursor: str | None = None
    status: VideoStatus | None = None
    review: ReviewFilter | None = None
    created_after: datetime | None = Field(None, description="Only videos created at or after this time.")
    created_before: datetime | None = Field(None, description="Only videos created before this time.")
    filename: str | None = Field(None, description="Only videos whose file name contains this (any case).")
    content_hash: str | None = Field(None, description="Only the video of this SHA-256.")


class LibraryItem(BaseModel):
    video_id: str
    filename: str | None = Field(description="The name the caller gave it.")
    status: VideoStatus
    stage: str | None
    progress: float
    review_state: str = Field(description="The latest review decision, or 'unreviewed'.")
    content_hash: str
    file_size: int
    container: str | None
    duration: float | None
    width: int | None
    height: int | None
    created_at: datetime
    finished_at: datetime | None
    content_url: str
    poster_url: str
    urls: SignedUrls | None = Field(
        None, description="Signed URLs of the content and pictures (for a <video> or <img>), until expires_at."
    )


class LibraryPage(BaseModel):
    items: list[LibraryItem]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last one.")


def encode_cursor(created_at: datetime, video_id: str) -> str:
    raw = json.dumps([created_at.astimezone(UTC).isoformat(), video_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, video_id = json.loads(raw)
        created_at = datetime.fromisoformat(stamp)
        if created_at.tzinfo is None or not isinstance(video_id, str) or len(video_id) > 36:
            raise ValueError("not a cursor")
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidCursor("cursor: not one this server handed out; start again without it.") from exc
    return created_at, video_id


def _like_contains(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


#: SQLite's trigram index of file names (migration 0013: FTS5, kept by triggers)
_VIDEO_FILENAME = table("video_filename", column("video_id"), column("user_id"), column("filename"))


def _trigram_searchable(text: str) -> bool:
    """Whether SQLite's trigram table can find ``text``: 3 characters or more (a trigram), and
    none that LIKE reads as a wildcard or an escape."""
    return len(text) >= 3 and not any(c in text for c in "%_\\")


#: SQLite: a text in more of the owner's names than this is common; the keyset walk then finds
#: a page of matches soon (at most LIMIT * library / this rows), the trigram table's list would
#: have to be sorted whole
RARE_NAMES = 1000


def named_videos(session: Session, user_id: str, text: str) -> list[str] | None:
    """SQLite: the owner's video ids whose file name holds ``text``, from the trigram table,
    when there are at most :data:`RARE_NAMES` of them; None when the table cannot say or the
    text is common (the plain ILIKE walk is then the quicker way to a page). PostgreSQL's
    trigram index needs none of this: its planner weighs both ways itself."""
    if not _trigram_searchable(text):
        return None
    found = session.scalars(
        select(_VIDEO_FILENAME.c.video_id)
        .where(_VIDEO_FILENAME.c.user_id == user_id, _VIDEO_FILENAME.c.filename.like(f"%{text}%"))
        .limit(RARE_NAMES + 1)
    ).all()
    return list(found) if len(found) <= RARE_NAMES else None


def conditions(query: LibraryQuery, user_id: str, named: list[str] | None = None) -> list[ColumnElement[bool]]:
    """Every WHERE condition of one listing (ownership first). The seam for more filters.
    ``named``: the only videos whose name can match the filename filter (:func:`named_videos`)."""
    where: list[ColumnElement[bool]] = [owned_by(user_id)]
    if query.filename:
        where.append(filename_matches(_like_contains(query.filename)))
        if named is not None:
            where.append(Video.id.in_(named))
    if query.status is not None:
        where.append(Video.status == query.status)
    decided_filter = query.review is not None and query.review != UNREVIEWED
    if decided_filter:
        # Driven from video_review_state's (user, state, video_created_at, video_id) index:
        # a rare decision is found without walking the whole library.
        where += [VideoReviewState.user_id == user_id, VideoReviewState.state == ReviewDecision(str(query.review))]
    elif query.review is not None:
        # NOT EXISTS rather than a test on the outer-joined row: PostgreSQL estimates an
        # anti-join well, and "state IS NULL after a LEFT JOIN" as one row (then sorts them all).
        state = aliased(VideoReviewState)  # not the outer-joined one the page displays
        decided = select(state.video_id).where(state.user_id == user_id, state.video_id == Video.id)
        where.append(~exists(decided))
    if query.created_after is not None:
        where.append(Video.created_at >= query.created_after)
    if query.created_before is not None:
        where.append(Video.created_at < query.created_before)
    if query.content_hash is not None:
        where.append(Content.content_hash == query.content_hash)
    if query.cursor is not None:
        created_at, video_id = decode_cursor(query.cursor)
        where.append(tuple_(*_order(query)) < tuple_(created_at, video_id))
    return where


def _order(query: LibraryQuery) -> tuple[Any, Any]:
    """The keyset columns: the video's, or their copies in video_review_state when a decision
    is filtered on (the same values, so a cursor means the same position either way)."""
    if query.review is not None and query.review != UNREVIEWED:
        return VideoReviewState.video_created_at, VideoReviewState.video_id
    return Video.created_at, Video.id


def check(query: LibraryQuery, max_limit: int) -> None:
    if not 1 <= query.limit <= max_limit:
        raise InvalidParameter(f"limit: between 1 and {max_limit} (LIBRARY_MAX_PAGE_SIZE), got {query.limit}.")
    if query.content_hash is not None and not _HEX64.fullmatch(query.content_hash):
        raise InvalidParameter("content_hash: 64 lower-case hex digits (a SHA-256).")
    for name in ("created_after", "created_before"):
        value = getattr(query, name)
        if value is not None and value.tzinfo is None:
            raise InvalidParameter(f"{name}: give a time zone (e.g. 2026-12-01T10:00:00Z).")


def statement(query: LibraryQuery, user_id: str, named: list[str] | None = None) -> Any:
    """The page's SELECT (exposed for EXPLAIN in bench/library.py)."""
    created_at, video_id = _order(query)
    columns = (
        Video.id,
        Video.filename,
        Video.status,
        Video.stage,
        Video.progress,
        VideoReviewState.state,
        Content.content_hash,
        Content.file_size,
        Content.media_info,
        Video.created_at,
        Video.finished_at,
    )
    if query.review is not None and query.review != UNREVIEWED:
        joined = select(*columns).select_from(VideoReviewState).join(Video, Video.id == VideoReviewState.video_id)
    else:
        joined = select(*columns).outerjoin(
            VideoReviewState, and_(VideoReviewState.user_id == user_id, VideoReviewState.video_id == Video.id)
        )
    joined = joined.join(Content, Content.id == Video.content_id)
    where = conditions(query, user_id, named)
    return joined.where(*where).order_by(created_at.desc(), video_id.desc()).limit(query.limit + 1)


def page(
    db: Database,
    user_id: str,
    query: LibraryQuery,
    *,
    max_limit: int,
    sign: Callable[[str], SignedUrls] | None = None,
) -> LibraryPage:
    check(query, max_limit)
    with db.session() as session:
        named = None
        if query.filename and db.engine.dialect.name == "sqlite":
            named = named_videos(session, user_id, query.filename)
        rows = session.execute(statement(query, user_id, named)).all()
    items = []
    for row in rows[: query.limit]:
        info: dict[str, Any] = row.media_info or {}
        items.append(
            LibraryItem(
                video_id=row.id,
                filename=row.filename,
                status=row.status,
                stage=row.stage,
                progress=row.progress,
                review_state=row.state.value if row.state is not None else UNREVIEWED,
                content_hash=row.content_hash,
                file_size=row.file_size,
                container=info.get("container"),
                duration=info.get("duration"),
                width=info.get("width"),
                height=info.get("height"),
                created_at=row.created_at,
                finished_at=row.finished_at,
                content_url=f"/v1/videos/{row.id}/content",
                poster_url=f"/v1/videos/{row.id}/poster.jpg",
                urls=sign(row.id) if sign is not None else None,
            )
        )
    last = rows[query.limit - 1] if len(rows) > query.limit else None
    return LibraryPage(items=items, next_cursor=encode_cursor(last.created_at, last.id) if last is not None else None)
