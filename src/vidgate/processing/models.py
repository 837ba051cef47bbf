"""The analysis result of one video, as stored and served."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from vidgate.moderation.models import ModerationResult, VideoHashes


class VideoStreamInfo(BaseModel):
    codec: str
    width: int
    height: int
    fps: float | None
    pix_fmt: str | None
    rotation: int = Field(0, description="Degrees the display matrix rotates the picture.")
    frames: int | None = None
    bitrate: int | None = None


class AudioStreamInfo(BaseModel):
    codec: str
    sample_rate: int | None
    channels: int | None
    language: str | None = None


class MediaMetadata(BaseModel):
    container: str
    duration: float | None
    bitrate: int | None
    size_bytes: int
    video: VideoStreamInfo
    audio: list[AudioStreamInfo]


class Segment(BaseModel):
    start: float
    end: float


class FrameSample(BaseModel):
    timestamp: float
    phash: str = Field(description="64-bit DCT perceptual hash, hex (black bars cut off first).")
    phash_mirror: str | None = Field(None, description="The same hash of the horizontally mirrored frame.")
    mean_luma: float
    motion: float = Field(description="Mean absolute luma change from the previous sample (0-255).")


class KeyframeIndex(BaseModel):
    count: int
    timestamps: list[float]
    mean_interval: float | None


class FrameStatistics(BaseModel):
    decoded_frames: int
    sampling: Literal["seek", "sequential"]
    scene_cuts: list[float]
    black_segments: list[Segment]
    frozen_segments: list[Segment]
    mean_motion: float
    max_motion: float


class EmbeddingResult(BaseModel):
    status: Literal["ok", "unavailable", "failed"]
    model_type: str = Field(description="The model that made the embedding (not necessarily the one asked for).")
    model_file: str | None = None
    requested_model_type: str | None = Field(
        None, description="The model type asked for, when another model stood in (its file is not installed)."
    )
    reason: str | None = None
    dimension: int | None = None
    frames: int = 0
    video_embedding: list[float] | None = Field(None, description="Mean of the frame embeddings, L2-normalised.")


class StageTiming(BaseModel):
    name: str
    seconds: float


class SimilarVideo(BaseModel):
    video_id: str | None = Field(
        description="Your video; null for a video in the shared library that is not yours "
        "(PROCESSING_SIMILARITY_SCOPE=shared): whose it is and what it is called are never told."
    )
    similarity: float = Field(
        description="The larger share of sampled frames found in the other video, this video's or the other's "
        "(0-1, as vPDQ); for an embedding match, the cosine."
    )
    method: Literal["frame_hashes", "embedding"] = Field(
        "frame_hashes", description="frame_hashes: per-frame pHash matching; embedding: the second stage (crops)."
    )
    matched_frames: int = Field(description="This video's sampled frames found in the other.")
    query_share: float | None = Field(None, description="Share of this video's sampled frames found in the other.")
    match_share: float | None = Field(None, description="Share of the other video's sampled frames found in this one.")
    query_start: float | None = Field(None, description="Seconds: the first of this video's matched frames.")
    query_end: float | None = Field(None, description="Seconds: the last of this video's matched frames.")
    match_start: float | None = Field(None, description="Seconds into the other video: its first matched frame.")
    match_end: float | None = Field(None, description="Seconds into the other video: its last matched frame.")
    hamming_threshold: int


class VideoAnalysisResult(BaseModel):
    video_id: str
    content_hash: str
    pipeline_version: str
    metadata: MediaMetadata
    keyframes: KeyframeIndex
    samples: list[FrameSample]
    statistics: FrameStatistics
    fingerprint: str = Field(description="64-bit video fingerprint: the bitwise majority of the frame hashes.")
    embeddings: EmbeddingResult
    moderation: ModerationResult | None = Field(None, description="Moderation signals (absent in older results).")
    hashes: VideoHashes | None = Field(None, description="vPDQ, poster PDQ, MD5 and SHA-256 (absent in older results).")
    stages: list[StageTiming]
    processing_seconds: float
    created_at: datetime
    similar_videos: list[SimilarVideo] = Field(
        default_factory=list, description="Near-duplicates among the videos the caller may see (filled when served)."
    )
