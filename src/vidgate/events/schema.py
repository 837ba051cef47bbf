"""One Pydantic model per event type, in one envelope:
``event_type, event_id, sequence, session_id, video_id, timestamp, data``.

``sequence`` numbers each user's events (all their sessions and videos, see
:mod:`vidgate.events.store`) so a client that reconnects can ask for what it missed after the
last number it saw. ``audience`` (the user ids allowed to see the event) travels between
processes but is never sent to clients.

An event's client JSON is made once and kept on the event (:func:`to_client`): one event goes
to every socket of its user, and serialising it per socket was most of the hub's CPU.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, PrivateAttr, TypeAdapter


class EventType(StrEnum):
    UPLOAD_STARTED = "upload_started"
    UPLOAD_PROGRESS = "upload_progress"
    UPLOAD_COMPLETED = "upload_completed"
    UPLOAD_FAILED = "upload_failed"
    PROCESSING_INITIATED = "processing_initiated"
    PROCESSING_PROGRESS = "processing_progress"
    PROCESSING_COMPLETED = "processing_completed"
    PROCESSING_FAILED = "processing_failed"
    DUPLICATE_DETECTED = "duplicate_detected"
    HASH_MATCH = "hash_match"
    SESSION_EXPIRED = "session_expired"
    VIDEO_REVIEWED = "video_reviewed"
    VIDEO_DELETED = "video_deleted"
    ERROR = "error"
    HEARTBEAT = "heartbeat"
    # replay horizon (issue 20)
    EVENTS_EXPIRED = "events_expired"


class AnyEvent(BaseModel):
    event_type: str
    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    sequence: int = 0
    session_id: str | None = None
    video_id: str | None = None
    timestamp: datetime = Field(default_factory=lambda: datetime.now(UTC))
    audience: list[str] = Field(default_factory=list, exclude=True)
    #: the client JSON, made once (to_client); never set by hand
    _client_json: str | None = PrivateAttr(default=None)
    #: how the WebSocket hub sends it (events.hub.outgoing_of), made once for every socket
    _outgoing: Any = PrivateAttr(default=None)

    @property
    def subject(self) -> str | None:
        """What the sequence counts: the session for upload events, else the video."""
        return (
            f"session:{self.session_id}" if self.session_id else (f"video:{self.video_id}" if self.video_id else None)
        )


class UploadStartedData(BaseModel):
    filename: str
    total_chunks: int
    file_size: int | None = None


class UploadStarted(AnyEvent):
    event_type: Literal["upload_started"] = "upload_started"
    data: UploadStartedData


class UploadProgressData(BaseModel):
    chunks_received: int
    total_chunks: int
    bytes_received: int
    progress_percentage: float


class UploadProgress(AnyEvent):
    event_type: Literal["upload_progress"] = "upload_progress"
    data: UploadProgressData


class UploadCompletedData(BaseModel):
    video_id: str
    content_hash: str
    file_size: int


class UploadCompleted(AnyEvent):
    event_type: Literal["upload_completed"] = "upload_completed"
    data: UploadCompletedData


class FailureData(BaseModel):
    error_code: str
    message: str


class UploadFailed(AnyEvent):
    event_type: Literal["upload_failed"] = "upload_failed"
    data: FailureData


class ProcessingInitiatedData(BaseModel):
    priority: int
    attempt: int


class ProcessingInitiated(AnyEvent):
    event_type: Literal["processing_initiated"] = "processing_initiated"
    data: ProcessingInitiatedData


class ProcessingProgressData(BaseModel):
    stage: str
    progress_percentage: float


class ProcessingProgress(AnyEvent):
    event_type: Literal["processing_progress"] = "processing_progress"
    data: ProcessingProgressData


class ProcessingCompletedData(BaseModel):
    processing_seconds: float
    fingerprint: str
    duration: float | None
    result_url: str
    flagged: bool = Field(False, description="Moderation flagged the video (reasons in result.moderation).")
    result: dict[str, Any] = Field(description="The VideoAnalysisResult.")


class ProcessingCompleted(AnyEvent):
    event_type: Literal["processing_completed"] = "processing_completed"
    data: ProcessingCompletedData


class ProcessingFailed(AnyEvent):
    event_type: Literal["processing_failed"] = "processing_failed"
    data: FailureData


class DuplicateDetectedData(BaseModel):
    video_id: str
    content_hash: str
    cached_result: dict[str, Any] | None = Field(None, description="The stored result, when processing has finished.")


class DuplicateDetected(AnyEvent):
    event_type: Literal["duplicate_detected"] = "duplicate_detected"
    data: DuplicateDetectedData


class HashMatchData(BaseModel):
    matches: list[dict[str, Any]] = Field(
        description="The bank entries matched (bank, entry_id, entry_name, percents)."
    )
    result_url: str


class HashMatchEvent(AnyEvent):
    """A processed video matched a hash bank: it is flagged."""

    event_type: Literal["hash_match"] = "hash_match"
    data: HashMatchData


class SessionExpiredData(BaseModel):
    chunks_received: int
    total_chunks: int


class SessionExpired(AnyEvent):
    event_type: Literal["session_expired"] = "session_expired"
    data: SessionExpiredData


class VideoReviewedData(BaseModel):
    review_id: str
    decision: Literal["approved", "rejected", "escalated"]
    note: str | None
    key_id: str | None = Field(description="The key that decided.")
    key_label: str | None
    key_role: str
    decided_at: datetime


class VideoReviewed(AnyEvent):
    """A review decision on a video, sent to its owner alone (decisions are per owner)."""

    event_type: Literal["video_reviewed"] = "video_reviewed"
    data: VideoReviewedData


# ------------------------------------------------------------------ library: deletion (issue 19)
class VideoDeletedData(BaseModel):
    """Says nothing of whether the stored bytes went too: that depends on other owners."""

    reason: Literal["request", "retention"] = Field(description="A DELETE, or the RETENTION_DAYS sweep.")
    filename: str | None
    content_hash: str
    key_id: str | None = Field(description="The key that deleted it (None: the retention sweep).")
    deleted_at: datetime


class VideoDeleted(AnyEvent):
    """The owner's video is gone (its record, reviews and links), sent to its owner alone."""

    event_type: Literal["video_deleted"] = "video_deleted"
    data: VideoDeletedData


# ------------------------------------------------------------------ end of library: deletion


class ErrorData(BaseModel):
    code: str
    message: str


class Error(AnyEvent):
    event_type: Literal["error"] = "error"
    data: ErrorData


class HeartbeatData(BaseModel):
    interval_seconds: float


class Heartbeat(AnyEvent):
    event_type: Literal["heartbeat"] = "heartbeat"
    data: HeartbeatData


# --- The replay horizon (issue 20): told when ``since`` asks for more than the store keeps ---


class EventsExpiredData(BaseModel):
    since: int = Field(description="The sequence the client asked to continue after.")
    oldest_sequence: int = Field(
        description="The oldest of the user's sequences still kept: events numbered after since and "
        "before this one are gone (older than WEBSOCKET_EVENT_RETENTION_SECONDS)."
    )


class EventsExpired(AnyEvent):
    """Some events the client asked for with ``since`` are no longer kept: fetch the current
    state over HTTP (``GET /v1/videos``, ``GET /v1/upload/sessions/{id}``). What is still kept
    follows, then live events. Not part of the numbered stream (``sequence`` 0); ``session_id``
    or ``video_id`` name the subscription it answers (neither for ``all``)."""

    event_type: Literal["events_expired"] = "events_expired"
    data: EventsExpiredData


Event = Annotated[
    UploadStarted
    | UploadProgress
    | UploadCompleted
    | UploadFailed
    | ProcessingInitiated
    | ProcessingProgress
    | ProcessingCompleted
    | ProcessingFailed
    | DuplicateDetected
    | HashMatchEvent
    | SessionExpired
    | VideoReviewed
    | VideoDeleted
    | Error
    | Heartbeat
    # replay horizon (events.hub), kept apart from the block above
    | EventsExpired,
    Field(discriminator="event_type"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def to_wire(event: AnyEvent) -> str:
    """JSON of the envelope with its audience (which clients never see): what another program
    sends through Celery (``send_websocket_notification``)."""
    payload = event.model_dump(mode="json")
    payload["audience"] = event.audience
    return json.dumps(payload)


def from_wire(text: str | bytes) -> Event:
    return EVENT_ADAPTER.validate_json(text)


def to_bus(event: AnyEvent) -> str:
    """A bus message: the client JSON as it is (so no receiver makes it again) and the audience."""
    return json.dumps({"audience": event.audience, "event": to_client(event)})


def from_bus(text: str | bytes) -> Event:
    """An event from a bus message (or from a :func:`to_wire` envelope, as published before)."""
    message = json.loads(text)
    if not isinstance(message.get("event"), str):
        return EVENT_ADAPTER.validate_python(message)
    event = from_client(message["event"])
    event.audience = [str(user) for user in message.get("audience") or ()]
    return event


def from_client(text: str) -> Event:
    """An event from its client JSON (a stored event), which it keeps for :func:`to_client`."""
    event = EVENT_ADAPTER.validate_json(text)
    event._client_json = text
    return event


def to_client(event: AnyEvent) -> str:
    """JSON for a WebSocket client or a webhook (no audience), made once per event."""
    text = event._client_json
    if text is None:
        text = event._client_json = event.model_dump_json()
    return text
