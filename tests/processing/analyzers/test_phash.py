"""pHash samples that survive letterboxing and flips: black bars are cut off before hashing and
the mirrored frame is hashed too (real clips, real encodes)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tests.sample_clips import clips  # noqa: F401  (fixture)
from vidgate.processing.analyzers.phash import BARS_SIZE, hamming, phash, without_bars
from vidgate.processing.models import VideoAnalysisResult
from vidgate.processing.pipeline import PipelineConfig, analyze
from vidgate.processing.similarity import _matched_frames


def transformed(source: Path, target: Path, change: object) -> Path:
    with av.open(str(source)) as src, av.open(str(target), "w") as out:
        stream = None
        for index, frame in enumerate(src.decode(video=0)):
            image = change(frame.to_ndarray(format="rgb24"))  # type: ignore[operator]
            if stream is None:
                stream = out.add_stream("libx264", rate=25, options={"preset": "veryfast"})
                stream.height, stream.width = (image.shape[0] // 2) * 2, (image.shape[1] // 2) * 2
                stream.pix_fmt = "yuv420p"
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[: stream.height, : stream.width]))
            picture.pts, picture.time_base = index, Fraction(1, 25)
            for packet in stream.encode(picture):
                out.mux(packet)
        assert stream is not None
        for packet in stream.encode():
            out.mux(packet)
    return target


def letterbox(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    canvas = np.zeros((h + h // 2, w, 3), dtype=np.uint8)
    canvas[h // 4 : h // 4 + h] = image
    return canvas


def run(path: Path, tmp_path: Path) -> VideoAnalysisResult:
    config = PipelineConfig(model_dir=tmp_path, moderation=False, vpdq=False)
    return analyze(path, video_id="v", content_hash="h", model_type="x", config=config)


def share_found(copy: VideoAnalysisResult, original: VideoAnalysisResult, *, mirrored: bool = False) -> float:
    mine = np.array([int((s.phash_mirror if mirrored else s.phash) or "0", 16) for s in copy.samples], dtype=np.uint64)
    theirs = np.array([int(s.phash, 16) for s in original.samples], dtype=np.uint64)
    return _matched_frames(mine, theirs, 10) / len(mine)


def test_bars_are_cut_off_before_hashing() -> None:
    rng = np.random.default_rng(3)
    picture = (rng.random((BARS_SIZE // 2, BARS_SIZE)) * 200 + 40).astype(np.float64)
    framed = np.zeros((BARS_SIZE, BARS_SIZE))
    framed[BARS_SIZE // 4 : BARS_SIZE // 4 + BARS_SIZE // 2] = picture
    assert without_bars(framed).shape == (32, 32)
    assert hamming(phash(without_bars(framed)), phash(without_bars(picture))) == 0
    dark = np.full((BARS_SIZE, BARS_SIZE), 10.0)  # a dark scene is not all bars
    assert without_bars(dark).shape == (32, 32)


def test_letterboxed_and_flipped_copies_hash_like_the_original(clips: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    original = run(clips["bikes"], tmp_path)
    boxed = run(transformed(clips["bikes"], tmp_path / "boxed.mp4", letterbox), tmp_path)
    flipped = run(transformed(clips["bikes"], tmp_path / "flip.mp4", lambda image: image[:, ::-1]), tmp_path)
    other = run(clips["bigbuckbunny"], tmp_path)
    assert share_found(boxed, original) >= 0.8
    assert share_found(flipped, original) < 0.5  # the plain hash does not survive a flip...
    assert share_found(flipped, original, mirrored=True) >= 0.8  # ...the mirrored one does
    assert share_found(other, original) == 0 and share_found(other, original, mirrored=True) == 0
