"""vPDQ on the frames the pipeline decodes anyway: one PDQ hash every ``seconds_per_hash``,
chosen and timed exactly as the reference (``vpdq`` 0.2.5) does, so the output is the same bit
for bit: every decoded frame is counted, frame ``n`` is hashed when ``n % int(seconds_per_hash *
fps) == 0``, converted to RGB24 at the stream's coded size, with the timestamp computed in
float32 as ``n / fps``."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from vidgate.moderation.models import PosterHash, VideoHashes, VpdqFeature, parse_text, to_text
from vidgate.moderation.pdq import pdq

__all__ = ["VpdqStage", "file_digests", "parse_text", "stream_frame_rate", "to_text"]

BLOCK_SIZE = 1 << 20
POSTER_MIN_QUALITY = 50


def stream_frame_rate(stream: Any) -> float:
    """The reference's rate: the average frame rate, else the base (r_frame_rate) one."""
    rate = stream.average_rate or stream.base_rate
    return float(rate) if rate else 0.0


class VpdqStage:
    def __init__(self, stream: Any, seconds_per_hash: float) -> None:
        self.seconds_per_hash = seconds_per_hash
        self.frame_rate = stream_frame_rate(stream)
        self.every = max(1, int(seconds_per_hash * self.frame_rate))
        self.width = stream.codec_context.width
        self.height = stream.codec_context.height
        self.features: list[VpdqFeature] = []
        self._rate32 = np.float32(self.frame_rate or 1.0)

    def wants(self, frame_number: int) -> bool:
        return frame_number % self.every == 0

    def add(self, frame_number: int, frame: Any) -> None:
        rgb = frame.reformat(width=self.width, height=self.height, format="rgb24", interpolation="AREA").to_ndarray()
        value = pdq(rgb)
        self.features.append(
            VpdqFeature(
                frame_number=frame_number,
                quality=value.quality,
                hash=value.hex,
                timestamp=float(np.float32(frame_number) / self._rate32),
            )
        )

    def finish(self, path: Path | BinaryIO) -> VideoHashes:
        poster = next((f for f in self.features if f.quality >= POSTER_MIN_QUALITY), None)
        poster = poster or (self.features[0] if self.features else None)
        md5, sha256 = file_digests(path)
        return VideoHashes(
            vpdq_seconds_per_hash=self.seconds_per_hash,
            frame_rate=self.frame_rate,
            vpdq=self.features,
            poster=PosterHash(
                frame_number=poster.frame_number, timestamp=poster.timestamp, pdq=poster.hash, quality=poster.quality
            )
            if poster
            else None,
            md5=md5,
            sha256=sha256,
        )


def file_digests(path: Path | BinaryIO) -> tuple[str, str]:
    """MD5 and SHA-256 of the file (or of a seekable binary file object, from its start), read
    in blocks (never whole)."""
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    if not isinstance(path, Path):
        path.seek(0)
        while block := path.read(BLOCK_SIZE):
            md5.update(block)
            sha256.update(block)
        return md5.hexdigest(), sha256.hexdigest()
    fd = os.open(path, os.O_RDONLY)
    try:
        while block := os.read(fd, BLOCK_SIZE):
            md5.update(block)
            sha256.update(block)
    finally:
        os.close(fd)
    return md5.hexdigest(), sha256.hexdigest()
