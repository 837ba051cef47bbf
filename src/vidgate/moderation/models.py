"""What moderation adds to a video's analysis result, and the vPDQ reference's text format of
its hashes (here, not beside the vPDQ stage, so that reading and writing it needs no NumPy)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class FrameScore(BaseModel):
    timestamp: float
    nsfw: float = Field(description="Probability of explicit content in this sampled frame (0-1).")


class NsfwResult(BaseModel):
    status: Literal["ok", "unavailable", "failed"]
    model: str = Field(description="The classifier and the package that shipped it.")
    reason: str | None = None
    threshold: float = Field(description="MODERATION_NSFW_THRESHOLD: a frame at or above it counts as explicit.")
    frames: int = 0
    max: float | None = None
    mean: float | None = None
    share_over_threshold: float | None = Field(None, description="Share of sampled frames at or above the threshold.")
    frame_scores: list[FrameScore] = Field(default_factory=list)


class HashMatch(BaseModel):
    """A bank entry this video matched with vPDQ (the reference's rule)."""

    bank: str
    entry_id: int
    entry_name: str | None = Field(None, description="The entry's id or label in the imported list, if it had one.")
    query_match_percent: float = Field(description="Share of this video's usable frames found in the entry.")
    entry_match_percent: float = Field(description="Share of the entry's usable frames found in this video.")
    query_start: float | None = Field(None, description="Seconds: the first of this video's matched frames.")
    query_end: float | None = Field(None, description="Seconds: the last of this video's matched frames.")
    entry_start: float | None = Field(
        None, description="Seconds into the entry's video: its first matched frame (None: an image, or not given)."
    )
    entry_end: float | None = Field(None, description="Seconds into the entry's video: its last matched frame.")


class FlagReason(BaseModel):
    code: Literal["nsfw", "hash_match"]
    message: str


class ModerationResult(BaseModel):
    flagged: bool = Field(description="True when any reason below applies: a human should look at this video.")
    reasons: list[FlagReason] = Field(default_factory=list)
    nsfw: NsfwResult
    hash_matches: list[HashMatch] = Field(default_factory=list)


class VpdqFeature(BaseModel):
    """One line of the vPDQ reference's output: a hashed frame."""

    frame_number: int
    quality: int = Field(description="PDQ quality 0-100; the reference ignores frames under 50 when matching.")
    hash: str = Field(description="256-bit PDQ hash, hex.")
    timestamp: float = Field(description="frame_number / frame rate, as the reference computes it (float32).")


class PosterHash(BaseModel):
    frame_number: int
    timestamp: float
    pdq: str
    quality: int


class VideoHashes(BaseModel):
    """Industry-standard hashes of the video and its file, exchangeable with hash-sharing programmes."""

    vpdq_seconds_per_hash: float = Field(description="0: every frame, as the reference's option.")
    frame_rate: float = Field(description="The rate vPDQ used: the stream's average rate, else its base rate.")
    vpdq: list[VpdqFeature]
    poster: PosterHash | None = Field(
        None, description="The poster frame: the first hashed frame of quality >= 50 (else the first)."
    )
    md5: str
    sha256: str


def to_text(features: list[VpdqFeature]) -> str:
    """The reference's text format: ``frame_number,quality,hash,timestamp`` per line, 3 decimals."""
    return "".join(f"{f.frame_number},{f.quality},{f.hash},{f.timestamp:.3f}\n" for f in features)


def parse_text(text: str) -> list[VpdqFeature]:
    """Lines of the reference's text format (blank lines ignored); ValueError names a bad line."""
    features = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.strip().split(",")
        if len(parts) != 4:
            raise ValueError(f"line {number}: expected frame_number,quality,hash,timestamp")
        frame, quality, value, timestamp = parts
        if len(value) != 64 or not all(c in "0123456789abcdefABCDEF" for c in value):
            raise ValueError(f"line {number}: {value[:70]!r} is not a 256-bit hex hash")
        try:
            features.append(
                VpdqFeature(
                    frame_number=int(frame), quality=int(quality), hash=value.lower(), timestamp=float(timestamp)
                )
            )
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}") from exc
    return features
