"""The pipeline's picture stage: a poster JPEG and a storyboard (one JPEG sprite of tiles and a
JSON index tile -> time, as Mux's storyboards), made from the sampled frames the pipeline
decodes anyway: no extra decoding, one small reformat per kept frame.

The storyboard keeps at most ``max_tiles`` samples, evenly spaced (every n-th sample of a long
video). The poster is the sample nearest the middle of the video that is not black.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from vidgate.processing.analyzers.framestats import BLACK_LUMA
from vidgate.processing.stages import NAMES, POSTER, STORYBOARD, STORYBOARD_INDEX, PictureConfig

__all__ = ["NAMES", "POSTER", "STORYBOARD", "STORYBOARD_INDEX", "PictureConfig", "PictureMaker", "encode_jpeg"]


def _even(value: float) -> int:
    return max(2, round(value / 2) * 2)


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    """JPEG of an RGB array with FFmpeg's MJPEG encoder (quality 1-100 -> qscale 31-2)."""
    import av

    height, width = rgb.shape[:2]
    qscale = str(round(2 + (100 - quality) * 29 / 99))
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuvj420p"
    codec.time_base = Fraction(1, 1)
    codec.options = {"qmin": qscale, "qmax": qscale}
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuvj420p")
    frame.pts = 0
    return b"".join(bytes(packet) for packet in [*codec.encode(frame), *codec.encode(None)])


class PictureMaker:
    def __init__(
        self, config: PictureConfig, *, width: int, height: int, duration: float, sample_interval: float
    ) -> None:
        self.config = config
        aspect = height / width if width else 9 / 16
        self.tile_size = (_even(config.tile_width), _even(config.tile_width * aspect))
        self.poster_size = (_even(config.poster_width), _even(config.poster_width * aspect))
        expected = int(duration / sample_interval) + 1 if duration > 0 else config.max_tiles
        self.stride = max(1, math.ceil(expected / config.max_tiles))
        self.duration = duration
        self.middle = duration / 2
        self.tiles: list[tuple[float, np.ndarray]] = []
        self._seen = 0
        self._poster: tuple[tuple[bool, float], np.ndarray] | None = None

    def add(self, timestamp: float, frame: Any, mean_luma: float) -> None:
        """Account one sampled frame (a PyAV VideoFrame)."""
        index, self._seen = self._seen, self._seen + 1
        if index % self.stride == 0 and len(self.tiles) < self.config.max_tiles:
            width, height = self.tile_size
            self.tiles.append((timestamp, frame.reformat(width=width, height=height, format="rgb24").to_ndarray()))
        rank = (mean_luma < BLACK_LUMA, abs(timestamp - self.middle))
        if self._poster is None or rank < self._poster[0]:
            width, height = self.poster_size
            self._poster = (rank, frame.reformat(width=width, height=height, format="rgb24").to_ndarray())

    def finish(self, directory: Path) -> list[Path]:
        """Write poster.jpg, storyboard.jpg and storyboard.json into ``directory`` (nothing
        when no frame was sampled)."""
        if self._poster is None or not self.tiles:
            return []
        quality = self.config.jpeg_quality
        poster = directory / POSTER
        poster.write_bytes(encode_jpeg(self._poster[1], quality))
        width, height = self.tile_size
        columns = min(self.config.columns, len(self.tiles))
        rows = math.ceil(len(self.tiles) / columns)
        sprite = np.zeros((rows * height, columns * width, 3), dtype=np.uint8)
        index_tiles = []
        for number, (timestamp, tile) in enumerate(self.tiles):
            x, y = (number % columns) * width, (number // columns) * height
            sprite[y : y + height, x : x + width] = tile
            index_tiles.append({"start": round(timestamp, 3), "x": x, "y": y})
        storyboard = directory / STORYBOARD
        storyboard.write_bytes(encode_jpeg(sprite, quality))
        index = directory / STORYBOARD_INDEX
        index.write_text(
            json.dumps(
                {
                    "tile_width": width,
                    "tile_height": height,
                    "columns": columns,
                    "rows": rows,
                    "duration": round(self.duration, 3),
                    "tiles": index_tiles,
                }
            )
        )
        return [poster, storyboard, index]
