"""What the analysis pipeline is told and what it reports, without the pipeline: its
configuration, its one error, the names of the pictures it makes. Kept apart from
:mod:`vidgate.processing.pipeline` so that the API process (which hands analyses to a child
and serves the pictures) never imports PyAV, NumPy or the model libraries."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

POSTER = "poster.jpg"
STORYBOARD = "storyboard.jpg"
STORYBOARD_INDEX = "storyboard.json"
NAMES = (POSTER, STORYBOARD, STORYBOARD_INDEX)


class PipelineError(Exception):
    """The video cannot be analysed (the decoder failed); retrying will not help."""


@dataclass
class PictureConfig:
    poster_width: int = 640
    tile_width: int = 160
    columns: int = 10
    max_tiles: int = 100
    jpeg_quality: int = 85


@dataclass
class PipelineConfig:
    model_dir: Path
    model_files: dict[str, str] = field(default_factory=dict)
    batch_size: int = 16
    sample_interval: float = 1.0
    decode_threads: int = 0
    pictures: PictureConfig | None = None
    moderation: bool = True
    nsfw_threshold: float = 0.8
    nsfw_min_frames: int = 1
    vpdq: bool = True
    vpdq_seconds_per_hash: float = 1.0
