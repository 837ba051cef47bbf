"""The picture stage on synthetic frames: tile spacing, the poster's choice, valid JPEGs."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np

from vidgate.processing.pictures import PictureConfig, PictureMaker, encode_jpeg


def frame(value: int, width: int = 320, height: int = 180) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(np.full((height, width, 3), value, dtype=np.uint8), format="rgb24")


def decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        picture: np.ndarray = next(container.decode(video=0)).to_ndarray(format="rgb24")
    return picture


def test_a_long_video_keeps_at_most_max_tiles_evenly_spaced(tmp_path: Path) -> None:
    config = PictureConfig(tile_width=32, columns=4, max_tiles=10, poster_width=64)
    maker = PictureMaker(config, width=320, height=180, duration=99.0, sample_interval=1.0)
    for second in range(100):
        maker.add(float(second), frame(100), 100.0)
    written = maker.finish(tmp_path)
    assert [p.name for p in written] == ["poster.jpg", "storyboard.jpg", "storyboard.json"]
    index = json.loads((tmp_path / "storyboard.json").read_text())
    assert [t["start"] for t in index["tiles"]] == [float(s) for s in range(0, 100, 10)]
    assert (index["tile_width"], index["tile_height"], index["columns"], index["rows"]) == (32, 18, 4, 3)
    assert index["tiles"][5] == {"start": 50.0, "x": 32, "y": 18}
    assert decode(tmp_path / "storyboard.jpg").shape == (3 * 18, 4 * 32, 3)
    assert decode(tmp_path / "poster.jpg").shape == (36, 64, 3)


def test_the_poster_is_the_frame_nearest_the_middle_that_is_not_black(tmp_path: Path) -> None:
    maker = PictureMaker(PictureConfig(poster_width=64), width=320, height=180, duration=10.0, sample_interval=1.0)
    for second in range(11):
        black = 4 <= second <= 6  # the middle of the video is black
        value = 0 if black else 20 * second
        maker.add(float(second), frame(value), 0.0 if black else float(value))
    maker.finish(tmp_path)
    poster = decode(tmp_path / "poster.jpg")
    assert abs(float(poster.mean()) - 60) < 6  # second 3 (value 60), not 7 (140): nearest first, earlier on ties


def test_nothing_sampled_writes_nothing(tmp_path: Path) -> None:
    maker = PictureMaker(PictureConfig(), width=320, height=180, duration=0.0, sample_interval=1.0)
    assert maker.finish(tmp_path) == [] and list(tmp_path.iterdir()) == []


def test_jpeg_quality_changes_the_size() -> None:
    noise = np.random.default_rng(3).integers(0, 255, (90, 160, 3), dtype=np.uint8)
    best, worst = encode_jpeg(noise, 100), encode_jpeg(noise, 1)
    assert best[:2] == worst[:2] == b"\xff\xd8" and len(best) > 2 * len(worst)
