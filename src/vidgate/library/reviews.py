"""Review decisions: each one kept (which key, when, what, why), the latest per owner and video
kept beside them for the library's filter, and announced as ``video_reviewed``.

Decisions are per owner: they are keyed by the video id the owner sees and the owner's user id,
so two accounts holding the same bytes review them independently.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from vidgate.auth import Principal
from vidgate.db.engine import Database
from vidgate.db.models import ApiKey, ReviewDecision, VideoReview, VideoReviewState, utcnow
from vidgate.errors import InvalidParameter
from vidgate.events.publisher import EventPublisher
from vidgate.events.schema import VideoReviewed, VideoReviewedData
from vidgate.library.owners import owned_video

#: The review filter's value for videos with no decision yet.
UNREVIEWED = "unreviewed"


class ReviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: ReviewDecision
    note: str | None = Field(None, description="Why (length limit: LIBRARY_REVIEW_NOTE_MAX_LENGTH).")


class ReviewView(BaseModel):
    review_id: str
    video_id: str
    decision: ReviewDecision
    note: str | None
    key_id: str | None = Field(description="The key that decided (keys list shows its label).")
    key_label: str | None
    key_role: str
    created_at: datetime


class ReviewHistory(BaseModel):
    video_id: str
    state: str = Field(description="The latest decision, or 'unreviewed'.")
    reviews: list[ReviewView] = Field(description="Every decision, newest first.")


def _view(row: VideoReview) -> ReviewView:
    return ReviewView(
        review_id=row.id,
        video_id=row.video_id,
        decision=row.decision,
        note=row.note,
        key_id=row.key_id,
        key_label=row.key_label,
        key_role=row.key_role,
        created_at=row.created_at,
    )


def record(
    db: Database,
    principal: Principal,
    video_id: str,
    request: ReviewRequest,
    *,
    note_max_length: int,
    events: EventPublisher | None = None,
) -> ReviewView:
    """Keep one decision and make it the video's review state for this owner."""
    note = (request.note or "").strip() or None
    if note is not None and len(note) > note_max_length:
        raise InvalidParameter(f"note: at most {note_max_length} characters (LIBRARY_REVIEW_NOTE_MAX_LENGTH).")
    with db.session() as session:
        video_created_at = owned_video(session, principal.user_id, video_id).video.created_at
        label = session.scalar(select(ApiKey.label).where(ApiKey.id == principal.key_id))
        row = VideoReview(
            video_id=video_id,
            user_id=principal.user_id,
            decision=request.decision,
            note=note,
            key_id=principal.key_id or None,
            key_label=label,
            key_role=principal.role.value,
            created_at=utcnow(),
        )
        session.add(row)
        session.flush()
        state = {
            "state": request.decision,
            "review_id": row.id,
            "updated_at": row.created_at,
            "video_created_at": video_created_at,
        }
        try:
            with session.begin_nested():
                session.add(VideoReviewState(user_id=principal.user_id, video_id=video_id, **state))
        except IntegrityError:  # a decision existed (or one is being recorded right now): the latest wins
            session.execute(
                update(VideoReviewState)
                .where(VideoReviewState.user_id == principal.user_id, VideoReviewState.video_id == video_id)
                .values(**state)
            )
        view = _view(row)
        if events is not None:
            events.to_user(
                VideoReviewed(
                    video_id=video_id,
                    data=VideoReviewedData(
                        review_id=view.review_id,
                        decision=view.decision.value,
                        note=view.note,
                        key_id=view.key_id,
                        key_label=view.key_label,
                        key_role=view.key_role,
                        decided_at=view.created_at,
                    ),
                ),
                principal.user_id,
                session,  # in the decision's transaction
            )
    return view


def history(db: Database, principal: Principal, video_id: str) -> ReviewHistory:
    with db.session() as session:
        owned_video(session, principal.user_id, video_id)
        rows = session.scalars(
            select(VideoReview)
            .where(VideoReview.user_id == principal.user_id, VideoReview.video_id == video_id)
            .order_by(VideoReview.created_at.desc(), VideoReview.id.desc())
        ).all()
        state = session.scalar(
            select(VideoReviewState.state).where(
                VideoReviewState.user_id == principal.user_id, VideoReviewState.video_id == video_id
            )
        )
        return ReviewHistory(
            video_id=video_id,
            state=state.value if state is not None else UNREVIEWED,
            reviews=[_view(row) for row in rows],
        )
