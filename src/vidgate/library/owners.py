"""Who owns a video: the one place the library asks.

Today one ``video`` row serves every owner of the same content, and a user owns it when one
of their upload sessions for it completed. What the caller sees of it that is theirs alone
(the file name they gave) comes from their own session, never from another owner's.
When videos become per-owner records, these functions are what changes; their callers
(listing, content, reviews, pictures) do not.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, Select, and_, exists, select
from sqlalchemy.orm import Session

from vidgate.db.models import SessionStatus, UploadSession, Video
from vidgate.errors import VideoNotFound


def _owner_sessions(user_id: str) -> ColumnElement[bool]:
    return and_(
        UploadSession.video_id == Video.id,
        UploadSession.user_id == user_id,
        UploadSession.status == SessionStatus.COMPLETED,
    )


def owned_by(user_id: str, *also: ColumnElement[bool]) -> ColumnElement[bool]:
    """True for the videos ``user_id`` owns (``also``: further conditions on their own session,
    e.g. on the file name they gave)."""
    return exists().where(_owner_sessions(user_id), *also)


def owner_filename(user_id: str) -> Select[str]:
    """The file name ``user_id`` gave the video (their latest completed upload of it), as a
    correlated scalar subquery of a select over :class:`Video`."""
    return (
        select(UploadSession.filename)
        .where(_owner_sessions(user_id))
        .order_by(UploadSession.completed_at.desc())
        .limit(1)
        .correlate(Video)
    )


def filename_matches(pattern: str) -> ColumnElement[bool]:
    """A condition for :func:`owned_by`: the owner's file name is ILIKE ``pattern`` (escape ``\\``)."""
    return UploadSession.filename.ilike(pattern, escape="\\")


@dataclass
class OwnedVideo:
    """A video as its owner sees it: the shared row, and what is the owner's own."""

    video: Video
    filename: str | None


def owned_video(session: Session, user_id: str, video_id: str) -> OwnedVideo:
    """The video ``video_id`` if ``user_id`` owns it; :class:`VideoNotFound` otherwise (the same
    answer whether it exists for someone else or not at all)."""
    row = session.execute(
        select(Video, owner_filename(user_id).scalar_subquery()).where(Video.id == video_id, owned_by(user_id))
    ).first()
    if row is None:
        raise VideoNotFound(f"No video {video_id!r}.")
    return OwnedVideo(video=row[0], filename=row[1])
