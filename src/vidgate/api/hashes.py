"""GET /v1/videos/{id}/hashes: the video's vPDQ (in the reference's text format), the PDQ of
its poster frame, and MD5/SHA-256 of the file, ready for hash-sharing programmes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from vidgate.api.deps import CurrentUser, ServicesDep
from vidgate.api.schemas import Envelope, ErrorEnvelope
from vidgate.errors import ResultNotReady
from vidgate.moderation.models import PosterHash, to_text

router = APIRouter(prefix="/v1/videos", tags=["videos"])
ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorEnvelope} for status in (400, 401, 404, 409)}


class HashesView(BaseModel):
    video_id: str
    vpdq: str = Field(description="vPDQ text format: frame_number,quality,hash,timestamp per line.")
    vpdq_frames: int
    vpdq_seconds_per_hash: float
    poster: PosterHash | None
    md5: str
    sha256: str


@router.get(
    "/{video_id}/hashes",
    response_model=Envelope[HashesView],
    responses={**ERRORS, 200: {"content": {"text/plain": {}}}},
    summary="vPDQ, poster PDQ, MD5 and SHA-256 (format=vpdq: the vPDQ text alone)",
)
def get_hashes(
    video_id: str,
    principal: CurrentUser,
    services: ServicesDep,
    format: Annotated[Literal["json", "vpdq"], Query(description="json (default) or vpdq (text/plain)")] = "json",
) -> Any:
    result = services.processing.result_without_similar(principal, video_id)
    if result.hashes is None:
        raise ResultNotReady(f"Video {video_id!r} was processed without vPDQ; process it again to get hashes.")
    text = to_text(result.hashes.vpdq)
    if format == "vpdq":
        return PlainTextResponse(text)
    hashes = result.hashes
    return Envelope(
        data=HashesView(
            video_id=video_id,
            vpdq=text,
            vpdq_frames=len(hashes.vpdq),
            vpdq_seconds_per_hash=hashes.vpdq_seconds_per_hash,
            poster=hashes.poster,
            md5=hashes.md5,
            sha256=hashes.sha256,
        )
    )
