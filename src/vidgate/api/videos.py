"""Videos and their analysis results: GET /v1/videos/{id} and /v1/videos/{id}/result.

A video is its owner's alone (another user's id is not found); what comes from the shared
content (hash, size, media info, fingerprint, the analysis) is derived from the bytes only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from vidgate.api.deps import CurrentUser, ServicesDep
from vidgate.api.schemas import Envelope, ErrorEnvelope
from vidgate.db.models import VideoStatus
from vidgate.processing.hashbits import to_hex, to_unsigned
from vidgate.processing.models import VideoAnalysisResult

router = APIRouter(prefix="/v1/videos", tags=["videos"])
ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorEnvelope} for status in (401, 404, 409)}


class VideoView(BaseModel):
    video_id: str
    status: VideoStatus
    stage: str | None
    progress: float
    content_hash: str
    file_size: int
    filename: str | None
    content_type: str | None
    media_info: dict[str, Any]
    priority: int
    attempts: int
    error_message: str | None
    fingerprint: str | None
    created_at: datetime
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


@router.get("/{video_id}", response_model=Envelope[VideoView], responses=ERRORS, summary="Status and metadata")
def get_video(video_id: str, principal: CurrentUser, services: ServicesDep) -> Envelope[VideoView]:
    video, content = services.processing.owned_video(principal, video_id)
    # The fingerprint is the analysis's: shown once this owner's video has completed, not before.
    fingerprint = content.fingerprint if video.status is VideoStatus.COMPLETED else None
    view = VideoView(
        video_id=video.id,
        status=video.status,
        stage=video.stage,
        progress=video.progress,
        content_hash=content.content_hash,
        file_size=content.file_size,
        filename=video.filename,
        content_type=video.content_type,
        media_info=content.media_info or {},
        priority=video.priority,
        attempts=video.attempts,
        error_message=video.error_message,
        fingerprint=to_hex(to_unsigned(fingerprint)) if fingerprint is not None else None,
        created_at=video.created_at,
        queued_at=video.queued_at,
        started_at=video.started_at,
        finished_at=video.finished_at,
    )
    return Envelope(data=view)


@router.get(
    "/{video_id}/result",
    response_model=Envelope[VideoAnalysisResult],
    responses=ERRORS,
    summary="The analysis result, with near-duplicates among the videos you may see",
)
def get_result(video_id: str, principal: CurrentUser, services: ServicesDep) -> Envelope[VideoAnalysisResult]:
    return Envelope(data=services.processing.result(principal, video_id))
