"""Pydantic models of the upload flow: what comes in, what goes out."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from vidgate.db.models import SessionStatus


class ChunkRequest(BaseModel):
    """One POST /v1/upload/video: a whole file or one chunk of a session (seed fields, plus
    the optional ``chunk_size`` and ``file_size`` that let out-of-order chunks go straight
    to their offset and oversize uploads be refused before any byte is stored)."""

    session_id: str | None = None
    chunk_index: int | None = None
    total_chunks: int | None = None
    chunk_size: int | None = None
    file_size: int | None = None
    file_hash: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    priority: int | None = None
    filename: str | None = None
    content_type: str | None = None


class SessionView(BaseModel):
    """The state of an upload session, as GET .../session/{id} reports it."""

    session_id: str
    upload_id: str = Field(description="Same as session_id (the seed's name for it in upload responses).")
    filename: str
    content_type: str | None
    status: SessionStatus
    total_chunks: int
    chunk_size: int | None
    chunks_received: int
    missing_chunks: list[int]
    bytes_received: int
    file_size: int | None
    progress_percentage: float
    priority: int
    file_hash: str | None
    content_hash: str | None
    video_id: str | None
    duplicate: bool = Field(False, description="The content was already stored: no new processing job was queued.")
    error_code: str | None
    error_message: str | None
    created_at: datetime
    last_updated: datetime
    expires_at: datetime
    completed_at: datetime | None


class ChunkReceipt(SessionView):
    """What a chunk POST answers: the session after this chunk."""

    chunk_index: int
    chunk_hash: str
    chunk_bytes: int
    duplicate_chunk: bool = Field(description="True when this exact chunk had already been received.")


class CleanupReport(BaseModel):
    expired_sessions: int = 0
    reassembled_sessions: int = 0
    failed_assemblies: int = 0
    purged_chunk_rows: int = 0
    orphan_uploads_removed: int = 0


class TusUpload(BaseModel):
    """What a tus HEAD reports of an upload (and what the API adds in its own headers)."""

    upload_id: str
    offset: int
    length: int | None
    metadata: str | None
    expires_at: datetime
    concat: str | None
    concat_parts: list[str]
    status: SessionStatus
    video_id: str | None
    duplicate: bool
    content_hash: str | None
