"""Who owns a video: the one place that says so.

Every owner of the same bytes has a ``video`` row of their own (``video.user_id``) over the
shared ``content`` row; a user owns exactly their own rows. What the caller sees that is
theirs alone (the file name they gave, their status, their reviews) is on that row, never
another owner's. :meth:`vidgate.processing.service.ProcessingService.owned_video` and the
library (listing, content, reviews, pictures) all ask here.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, bindparam, func, literal_column, select
from sqlalchemy.orm import Session

from vidgate.db.engine import Database
from vidgate.db.models import Content, Video, VideoStatus
from vidgate.errors import VideoNotFound


def owned_by(user_id: str) -> ColumnElement[bool]:
    """True for the videos ``user_id`` owns (for a select over :class:`Video`)."""
    return Video.user_id == user_id


def filename_matches(pattern: str) -> ColumnElement[bool]:
    """The owner's file name is ILIKE ``pattern`` (escape ``\\``)."""
    return Video.filename.ilike(pattern, escape="\\")


@dataclass
class OwnedVideo:
    """A video as its owner sees it: their own row, and the content (bytes) under it."""

    video: Video
    content: Content

    @property
    def filename(self) -> str | None:
        return self.video.filename


def owned_video(session: Session, user_id: str, video_id: str) -> OwnedVideo:
    """The video ``video_id`` if ``user_id`` owns it; :class:`VideoNotFound` otherwise (the same
    answer whether it exists for someone else or not at all)."""
    row = session.execute(
        select(Video, Content)
        .join(Content, Content.id == Video.content_id)
        .where(Video.id == video_id, owned_by(user_id))
    ).first()
    if row is None:
        raise VideoNotFound(f"No video {video_id!r}.")
    return OwnedVideo(video=row[0], content=row[1])


@dataclass(frozen=True)
class ServedVideo:
    """What serving a video's bytes or pictures needs (a player makes many Range requests, so
    this is one small prebuilt query: 0.6 ms instead of 3 for the ORM's on SQLite)."""

    video_id: str
    user_id: str
    filename: str | None
    status: VideoStatus
    content_hash: str
    file_size: int
    storage_key: str
    container: str | None


_SERVED = (
    select(
        Video.id,
        Video.user_id,
        Video.filename,
        Video.status,
        Content.content_hash,
        Content.file_size,
        Content.storage_key,
        Content.media_info,
    )
    .join(Content, Content.id == Video.content_id)
    .where(Video.id == bindparam("video_id"))
)
_SERVED_OWNED = _SERVED.where(Video.user_id == bindparam("user_id"))
#: on SQLite's instant reader (raw rows, no result processing): the container read by SQLite
_CONTAINER = func.json_extract(Content.media_info, literal_column("'$.container'"))
_SERVED_NOW = {
    owned: statement.with_only_columns(*statement.selected_columns[:-1], _CONTAINER)
    for owned, statement in ((False, _SERVED), (True, _SERVED_OWNED))
}


def served_video(db: Database, video_id: str, user_id: str | None) -> ServedVideo | None:
    """The video ``video_id`` if ``user_id`` owns it (None: whoever owns it, for checking a
    signed URL against its owner); None if there is no such video. Blocking: in a thread."""
    with db.read_engine.connect() as connection:  # SQLite: no write lock for a read
        if user_id is None:
            row = connection.execute(_SERVED, {"video_id": video_id}).first()
        else:
            row = connection.execute(_SERVED_OWNED, {"video_id": video_id, "user_id": user_id}).first()
    if row is None:
        return None
    return _served(
        row.id,
        row.user_id,
        row.filename,
        row.status,
        row.content_hash,
        row.file_size,
        row.storage_key,
        (row.media_info or {}).get("container"),
    )


class WouldWait(Exception):
    """:func:`served_video_now` cannot answer without waiting: ask :func:`served_video` in a thread."""


#: _SERVED_NOW as SQLite's SQL, with their parameters' order
_SQLITE: dict[bool, tuple[str, tuple[str, ...]]] = {}


def served_video_now(db: Database, video_id: str, user_id: str | None) -> ServedVideo | None:
    """:func:`served_video` on the calling thread (the event loop) when that cannot wait: on
    SQLite, one indexed read on :meth:`Database.instant_reader` (tens of microseconds, cheaper
    than the thread hop it saves). Raises :class:`WouldWait` on PostgreSQL or when SQLite is
    busy. Each call reads the newest commits: a video deleted before it is not found."""
    connection = db.instant_reader()
    if connection is None:
        raise WouldWait("not SQLite")
    owned = user_id is not None
    if owned not in _SQLITE:
        compiled = _SERVED_NOW[owned].compile(dialect=db.engine.dialect)
        _SQLITE[owned] = (compiled.string, tuple(compiled.positiontup or ()))
    sql, names = _SQLITE[owned]
    values = {"video_id": video_id, "user_id": user_id}
    try:
        row = connection.execute(sql, [values[name] for name in names]).fetchone()
    except sqlite3.OperationalError as exc:  # busy (or locked): never wait on the event loop
        raise WouldWait(str(exc)) from exc
    if row is None:
        return None
    return _served(*row)


def _served(
    video_id: str,
    user_id: str,
    filename: str | None,
    status: Any,
    content_hash: str,
    file_size: int,
    storage_key: str,
    container: str | None,
) -> ServedVideo:
    return ServedVideo(
        video_id=video_id,
        user_id=user_id,
        filename=filename,
        status=VideoStatus(status),
        content_hash=content_hash,
        file_size=int(file_size),
        storage_key=storage_key,
        container=container,
    )
