"""What the client returns, as Pydantic models.

These mirror the server's JSON rather than importing its internal models, so the client
needs nothing of the server but its HTTP API and tolerates fields it does not know. The
analysis result is the server's public :class:`VideoAnalysisResult` schema itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from vidgate.processing.models import VideoAnalysisResult

__all__ = [
    "ChunkReceipt",
    "ProcessingOutcome",
    "ProgressUpdate",
    "SessionInfo",
    "UploadResult",
    "VideoAnalysisResult",
    "VideoInfo",
]


class _ServerModel(BaseModel):
    model_config = ConfigDict(extra="ignore")


class SessionInfo(_ServerModel):
    """An upload session as GET /v1/upload/video/session/{id} reports it."""

    session_id: str
    status: str = Field(description="active, assembling, completed, failed, cancelled or expired.")
    filename: str | None = None
    total_chunks: int
    chunk_size: int | None = None
    chunks_received: int
    missing_chunks: list[int]
    bytes_received: int = 0
    file_size: int | None = None
    progress_percentage: float = 0.0
    content_hash: str | None = None
    video_id: str | None = None
    duplicate: bool = False
    error_code: str | None = None
    error_message: str | None = None
    expires_at: datetime | None = None


class ChunkReceipt(SessionInfo):
    """The answer to one chunk: the session after it, and the cached result of known content."""

    chunk_index: int
    duplicate_chunk: bool = False
    result: VideoAnalysisResult | None = None


class VideoInfo(_ServerModel):
    """A stored video's processing state (GET /v1/videos/{id})."""

    video_id: str
    status: str = Field(description="uploaded, queued, processing, completed or failed.")
    stage: str | None = None
    progress: float = 0.0
    content_hash: str
    file_size: int
    error_message: str | None = None


class ProcessingOutcome(BaseModel):
    """How a video's processing ended: its result, or why it failed."""

    video_id: str
    status: Literal["completed", "failed"]
    error: str | None = None
    result: VideoAnalysisResult | None = None


class UploadResult(BaseModel):
    """One file's upload: what was sent, what the server stored, and (after waiting) its analysis."""

    path: Path
    file_size: int
    sha256: str = Field(description="SHA-256 computed here while reading the file; equal to the server's content_hash.")
    session_id: str
    video_id: str
    duplicate: bool = Field(description="The server already held this content (stored once, not processed again).")
    chunk_size: int
    total_chunks: int
    chunks_sent: int = Field(description="Chunks sent by this call; fewer than total_chunks after a resume.")
    resumed: bool = Field(description="An earlier, interrupted upload of this file was continued.")
    seconds: float = Field(description="Wall-clock time of the upload (not of the wait).")
    processing_status: Literal["completed", "failed"] | None = Field(
        None, description="Set when the call waited for processing, or the result came with a duplicate."
    )
    processing_error: str | None = None
    result: VideoAnalysisResult | None = None


@dataclass(frozen=True, slots=True)
class ProgressUpdate:
    """Passed to a progress callback as bytes go out (a plain dataclass: it is made per block).

    The first update comes before any byte goes out, with the totals and, after a resume, the
    part already on the server counted as done (``bytes_resumed``, ``chunks_done``); a speed is
    ``bytes_sent`` (what this call sent) over time, never ``bytes_done``."""

    path: Path
    bytes_done: int
    bytes_total: int
    chunks_done: int
    chunks_total: int
    phase: Literal["uploading", "verifying", "waiting"]
    bytes_resumed: int = 0  # on the server before this call (an earlier, interrupted run sent them)

    @property
    def bytes_sent(self) -> int:
        """Bytes this call sent so far."""
        return self.bytes_done - self.bytes_resumed
