"""Tables of vidgate: the seed's upload_session / upload_chunk / upload_progress_log,
plus video (one row per stored content hash), user_account and api_key."""

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
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class Video(Base):
    """One row per stored content (SHA-256); owners are the users with a completed session for it."""

    __tablename__ = "video"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    file_size: Mapped[int] = mapped_column(BigInteger)
    storage_key: Mapped[str] = mapped_column(String(512))
    content_type: Mapped[str | None] = mapped_column(String(100))
    filename: Mapped[str | None] = mapped_column(String(255))
    first_user_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[VideoStatus] = mapped_column(
        _enum(VideoStatus, "video_status"), default=VideoStatus.UPLOADED, index=True
    )
    priority: Mapped[int] = mapped_column(Integer, default=5)
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    media_info: Mapped[dict[str, Any]] = mapped_column(default=dict)
    processing_options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    stage: Mapped[str | None] = mapped_column(String(32))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    queued_at: Mapped[datetime | None]
    dispatched_at: Mapped[datetime | None] = mapped_column(index=True)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    fingerprint: Mapped[int | None] = mapped_column(BigInteger)


class VideoAnalysisResultRow(Base):
    """One stored analysis per video (unique: a redelivered job cannot store it twice)."""

    __tablename__ = "video_analysis_result"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    video_id: Mapped[str] = mapped_column(ForeignKey("video.id", ondelete="CASCADE"), unique=True)
    pipeline_version: Mapped[str] = mapped_column(String(16))
    model_type: Mapped[str] = mapped_column(String(64))
    result: Mapped[dict[str, Any]] = mapped_column()
    processing_seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class FrameHash(Base):
    """A sampled frame's 64-bit perceptual hash, split into four indexed 16-bit bands so
    near-duplicate search is an index lookup per band (multi-index hashing), on SQLite and
    plain PostgreSQL alike."""

    __tablename__ = "frame_hash"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    video_id: Mapped[str] = mapped_column(ForeignKey("video.id", ondelete="CASCADE"), index=True)
    timestamp: Mapped[float] = mapped_column(Float)
    hash: Mapped[int] = mapped_column(BigInteger)
    band0: Mapped[int] = mapped_column(Integer, index=True)
    band1: Mapped[int] = mapped_column(Integer, index=True)
    band2: Mapped[int] = mapped_column(Integer, index=True)
    band3: Mapped[int] = mapped_column(Integer, index=True)


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
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_updated: Mapped[datetime] = mapped_column(default=utcnow)
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
