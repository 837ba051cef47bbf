"""Tables of vidgate: the seed's upload_session / upload_chunk / upload_progress_log, plus
content (one row per stored SHA-256: the blob and its analysis), video (one row per owner
and content: what that owner uploaded and sees), user_account and api_key."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend (SQLite drops the zone; we put it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON().with_variant(JSONB(), "postgresql"), datetime: UTCDateTime()}


class SessionStatus(StrEnum):
    ACTIVE = "active"
    ASSEMBLING = "assembling"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


TERMINAL_STATUSES = frozenset(
    {SessionStatus.COMPLETED, SessionStatus.FAILED, SessionStatus.CANCELLED, SessionStatus.EXPIRED}
)


class VideoStatus(StrEnum):
    UPLOADED = "uploaded"
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


def _enum(cls: type[StrEnum], name: str) -> Enum:
    return Enum(cls, name=name, values_callable=lambda members: [m.value for m in members], validate_strings=True)


class UserAccount(Base):
    __tablename__ = "user_account"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    webhook_secret: Mapped[str | None] = mapped_column(String(128))


class ApiKey(Base):
    """An API key, stored only as its SHA-256 (keys are 256-bit random, so no KDF needed)."""

    __tablename__ = "api_key"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_prefix: Mapped[str] = mapped_column(String(16))
    label: Mapped[str | None] = mapped_column(String(100))
    #: viewer | uploader | reviewer | admin (vidgate.auth.Role); keys older than 0010 are uploaders
    role: Mapped[str] = mapped_column(String(16), default="uploader", server_default="uploader")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class AnalysisStatus(StrEnum):
    PENDING = "pending"  # not analysed (yet, or again)
    PROCESSING = "processing"  # one job is analysing it (``Content.analysing_video_id``)
    COMPLETED = "completed"
    FAILED = "failed"


class Content(Base):
    """Stored bytes, once per SHA-256, and what is derived from them alone (the analysis).

    Never shown to users as such: every owner reaches it only through a :class:`Video` of
    their own, so nothing here may name an owner, a file name or an upload."""

    __tablename__ = "content"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    file_size: Mapped[int] = mapped_column(BigInteger)
    storage_key: Mapped[str] = mapped_column(String(512))
    media_info: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[AnalysisStatus] = mapped_column(
        _enum(AnalysisStatus, "analysis_status"), default=AnalysisStatus.PENDING, index=True
    )
    #: the video whose job analyses the content now (its claim); other videos' jobs wait for it
    analysing_video_id: Mapped[str | None] = mapped_column(String(36))
    analyses: Mapped[int] = mapped_column(Integer, default=0)  # analysis runs started
    error_message: Mapped[str | None] = mapped_column(Text)
    fingerprint: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_content_finished_at", "finished_at", "id"),)  # the bank re-match's pages


class Video(Base):
    """One owner's video: their upload's name, options, priority and times, and processing as
    they see it. Each owner of the same bytes has their own row (never another's id); the
    analysis is the content's, shared. One row per owner and content (a repeated upload by
    the same owner is answered with the same video)."""

    __tablename__ = "video"
    __table_args__ = (
        UniqueConstraint("user_id", "content_id", name="uq_video_user_content"),
        Index("ix_video_status_lease_expires_at", "status", "lease_expires_at"),
        # The library's keyset: the owner's videos newest first, and its status filter (0010).
        Index("ix_video_user_created_id", "user_id", "created_at", "id"),
        Index("ix_video_user_status_created_id", "user_id", "status", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(String(128), index=True)
    content_id: Mapped[str] = mapped_column(ForeignKey("content.id"), index=True)
    content_type: Mapped[str | None] = mapped_column(String(100))
    filename: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[VideoStatus] = mapped_column(
        _enum(VideoStatus, "video_status"), default=VideoStatus.UPLOADED, index=True
    )
    priority: Mapped[int] = mapped_column(Integer, default=5)
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    processing_options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    stage: Mapped[str | None] = mapped_column(String(32))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    queued_at: Mapped[datetime | None]
    dispatched_at: Mapped[datetime | None] = mapped_column(index=True)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    #: the worker running (or that last ran) the job; attempts is the lease's fencing token
    lease_holder: Mapped[str | None] = mapped_column(String(255))
    #: the process (on the holder's host) running the job: a gone one's job is taken over at once
    lease_pid: Mapped[int | None] = mapped_column(Integer)
    #: a processing job whose lease ran out here is queued again (vidgate.processing.lease)
    lease_expires_at: Mapped[datetime | None]


class VideoAnalysisResultRow(Base):
    """One stored analysis per content (unique: a redelivered job cannot store it twice)."""

    __tablename__ = "video_analysis_result"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    content_id: Mapped[str] = mapped_column(ForeignKey("content.id", ondelete="CASCADE"), unique=True)
    pipeline_version: Mapped[str] = mapped_column(String(16))
    model_type: Mapped[str] = mapped_column(String(64))
    result: Mapped[dict[str, Any]] = mapped_column()
    processing_seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ContentEmbedding(Base):
    """A content's video embedding (float32, L2-normalised), for the near-duplicate search's
    second stage (crops that change every frame hash but not what the network sees)."""

    __tablename__ = "content_embedding"

    content_id: Mapped[str] = mapped_column(ForeignKey("content.id", ondelete="CASCADE"), primary_key=True)
    model_type: Mapped[str] = mapped_column(String(255))
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class FrameHash(Base):
    """A sampled frame's 64-bit perceptual hash, split into four indexed 16-bit bands so
    near-duplicate search is an index lookup per band (multi-index hashing), on SQLite and
    plain PostgreSQL alike. Per content: derived from the bytes alone."""

    __tablename__ = "frame_hash"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    content_id: Mapped[str] = mapped_column(ForeignKey("content.id", ondelete="CASCADE"), index=True)
    timestamp: Mapped[float] = mapped_column(Float)
    hash: Mapped[int] = mapped_column(BigInteger)
    band0: Mapped[int] = mapped_column(Integer, index=True)
    band1: Mapped[int] = mapped_column(Integer, index=True)
    band2: Mapped[int] = mapped_column(Integer, index=True)
    band3: Mapped[int] = mapped_column(Integer, index=True)


class ReviewDecision(StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"
    ESCALATED = "escalated"


class VideoReview(Base):
    """One review decision, kept forever: which owner's video, which key decided, what, when."""

    __tablename__ = "video_review"
    __table_args__ = (Index("ix_video_review_owner_video", "user_id", "video_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    video_id: Mapped[str] = mapped_column(ForeignKey("video.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"))
    decision: Mapped[ReviewDecision] = mapped_column(_enum(ReviewDecision, "review_decision"))
    note: Mapped[str | None] = mapped_column(Text)
    key_id: Mapped[str | None] = mapped_column(String(36))  # the reviewer's key (no FK: kept when it goes)
    key_label: Mapped[str | None] = mapped_column(String(100))
    key_role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class VideoReviewState(Base):
    """The latest decision per owner and video: what the library's review filter reads."""

    __tablename__ = "video_review_state"
    __table_args__ = (
        # the library's review filter walks this in its (created_at, id) order, newest first
        Index("ix_video_review_state_owner_state_created", "user_id", "state", "video_created_at", "video_id"),
    )

    user_id: Mapped[str] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"), primary_key=True)
    video_id: Mapped[str] = mapped_column(ForeignKey("video.id", ondelete="CASCADE"), primary_key=True)
    state: Mapped[ReviewDecision] = mapped_column(_enum(ReviewDecision, "review_decision"))
    review_id: Mapped[str] = mapped_column(String(36))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    video_created_at: Mapped[datetime]  # a copy of video.created_at (never changes): the keyset


class UploadSession(Base):
    __tablename__ = "upload_session"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    session_id: Mapped[str] = mapped_column(String(128), unique=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str | None] = mapped_column(String(100))
    file_size: Mapped[int | None] = mapped_column(BigInteger)
    file_hash: Mapped[str | None] = mapped_column(String(128))
    total_chunks: Mapped[int] = mapped_column(Integer)
    chunk_size: Mapped[int | None] = mapped_column(BigInteger)
    chunks_received: Mapped[int] = mapped_column(Integer, default=0)
    bytes_received: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[SessionStatus] = mapped_column(
        _enum(SessionStatus, "upload_session_status"), default=SessionStatus.ACTIVE, index=True
    )
    user_id: Mapped[str] = mapped_column(String(128), index=True)
    username: Mapped[str] = mapped_column(String(100))
    upload_options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    priority: Mapped[int] = mapped_column(Integer, default=5)
    content_hash: Mapped[str | None] = mapped_column(String(64))
    video_id: Mapped[str | None] = mapped_column(ForeignKey("video.id"), index=True)
    is_duplicate: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: "chunks" (the seed API: indexed chunks) or "tus" (appended at an offset, one chunk row per PATCH)
    protocol: Mapped[str] = mapped_column(String(16), default="chunks", server_default="chunks")
    #: tus concatenation: "partial" (a piece of a later final upload) or "final" (made of partials)
    concat: Mapped[str | None] = mapped_column(String(16))
    concat_parts: Mapped[list[str] | None] = mapped_column(JSON)
    #: the Upload-Metadata header as the client sent it (HEAD answers it back)
    upload_metadata: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    #: the UploadId of the upload's S3 multipart upload (uploads in progress in the bucket), set once
    s3_upload_id: Mapped[str | None] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_updated: Mapped[datetime] = mapped_column(default=utcnow)
    #: the expiry as of the last write (with the timeout then in force); only the purge of finished
    #: sessions' chunk rows uses it: expiry, views and Upload-Expires are last_updated + the timeout in force
    expires_at: Mapped[datetime] = mapped_column(index=True)
    completed_at: Mapped[datetime | None]


class UploadChunk(Base):
    __tablename__ = "upload_chunk"
    __table_args__ = (UniqueConstraint("session_id", "chunk_index", name="uq_upload_chunk_session_index"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    session_id: Mapped[str] = mapped_column(ForeignKey("upload_session.session_id", ondelete="CASCADE"))
    chunk_index: Mapped[int] = mapped_column(Integer)
    chunk_size: Mapped[int] = mapped_column(BigInteger)
    chunk_hash: Mapped[str | None] = mapped_column(String(128))  # None for a tus PATCH (migration 0005)
    storage_path: Mapped[str] = mapped_column(String(512))
    received: Mapped[bool] = mapped_column(Boolean, default=False)
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    received_at: Mapped[datetime | None]
    verified_at: Mapped[datetime | None]


class UploadProgressLog(Base):
    __tablename__ = "upload_progress_log"
    __table_args__ = (Index("ix_upload_progress_log_session_created", "session_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    session_id: Mapped[str] = mapped_column(ForeignKey("upload_session.session_id", ondelete="CASCADE"))
    event_type: Mapped[str] = mapped_column(String(64))
    chunks_received: Mapped[int] = mapped_column(Integer, default=0)
    bytes_received: Mapped[int] = mapped_column(BigInteger, default=0)
    progress_percentage: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """One event to one user's webhook: the outbox its sender works through, with retries."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (UniqueConstraint("event_id", "user_id", name="uq_webhook_delivery_event_user"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    event_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2048))
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(index=True)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]


BANK_BANDS = 16  # a 256-bit PDQ hash as sixteen 16-bit bands (multi-index hashing)


class HashBank(Base):
    """A named list of known hashes (imported from ThreatExchange, HMA or a plain list)."""

    __tablename__ = "hash_bank"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # imports into the bank
    #: stored videos have been matched against the entries up to this revision
    rematched_revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    rematch_target: Mapped[int | None] = mapped_column(Integer)  # the pass in progress: entries up to this
    rematch_after: Mapped[datetime | None] = mapped_column(UTCDateTime())  # the pass's last content done:
    rematch_cursor: Mapped[str | None] = mapped_column(String(36))  # its finish time and id


class HashBankState(Base):
    """One row: ``token`` changes with every import or delete (processes' bank indexes are stale)."""

    __tablename__ = "hash_bank_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token: Mapped[str] = mapped_column(String(32))


class HashBankEntry(Base):
    """One known item: a video (vPDQ, many frames) or an image (one PDQ hash)."""

    __tablename__ = "hash_bank_entry"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    bank_id: Mapped[int] = mapped_column(ForeignKey("hash_bank.id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(8))  # "vpdq" or "pdq"
    frames: Mapped[int] = mapped_column(Integer)
    revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # the import that added it


class HashBankFrame(Base):
    """A frame hash of an entry: the 256 bits as four signed 64-bit words, and sixteen 16-bit
    bands, each indexed together with the entry so a band lookup is an index-only scan."""

    __tablename__ = "hash_bank_frame"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("hash_bank_entry.id", ondelete="CASCADE"), index=True)
    quality: Mapped[int] = mapped_column(Integer)
    timestamp: Mapped[float | None] = mapped_column(Float)  # seconds into the bank's video (None: an image)
    w0: Mapped[int] = mapped_column(BigInteger)
    w1: Mapped[int] = mapped_column(BigInteger)
    w2: Mapped[int] = mapped_column(BigInteger)
    w3: Mapped[int] = mapped_column(BigInteger)
    b0: Mapped[int] = mapped_column(Integer)
    b1: Mapped[int] = mapped_column(Integer)
    b2: Mapped[int] = mapped_column(Integer)
    b3: Mapped[int] = mapped_column(Integer)
    b4: Mapped[int] = mapped_column(Integer)
    b5: Mapped[int] = mapped_column(Integer)
    b6: Mapped[int] = mapped_column(Integer)
    b7: Mapped[int] = mapped_column(Integer)
    b8: Mapped[int] = mapped_column(Integer)
    b9: Mapped[int] = mapped_column(Integer)
    b10: Mapped[int] = mapped_column(Integer)
    b11: Mapped[int] = mapped_column(Integer)
    b12: Mapped[int] = mapped_column(Integer)
    b13: Mapped[int] = mapped_column(Integer)
    b14: Mapped[int] = mapped_column(Integer)
    b15: Mapped[int] = mapped_column(Integer)

    __table_args__ = tuple(Index(f"ix_hash_bank_frame_b{i}", f"b{i}", "entry_id") for i in range(BANK_BANDS))


class StoredEvent(Base):
    """One event as one user receives it, numbered in that user's stream (gapless: the number
    comes from :class:`EventCounter` in the transaction of the state change the event describes).
    Replay (``since``), catch-up after a bus outage and webhooks read these rows."""

    __tablename__ = "event_store"
    __table_args__ = (UniqueConstraint("user_id", "sequence", name="uq_event_store_user_sequence"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(128))
    sequence: Mapped[int] = mapped_column(BigInteger)
    event_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(64))
    session_id: Mapped[str | None] = mapped_column(String(128))
    video_id: Mapped[str | None] = mapped_column(String(36))
    #: the event as clients see it (schema.to_client), sequence included
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class EventCounter(Base):
    """The last sequence given to a user's events. Incremented in the event's own transaction, so
    its row lock orders a user's events by commit and a rolled-back change leaves no gap. Never
    swept with the events: numbers keep rising after old events are gone."""

    __tablename__ = "event_counter"

    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    last_sequence: Mapped[int] = mapped_column(BigInteger)
