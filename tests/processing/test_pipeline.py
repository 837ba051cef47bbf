"""The analysis pipeline on real encoded videos, with a real (tiny) ONNX model."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tests.media import make_scene_video
from tests.processing.onnx_models import channel_mean_model
from vidgate.processing.analyzers.embeddings import IMAGENET_MEAN, IMAGENET_STD
from vidgate.processing.analyzers.phash import bands, hamming, majority, phash
from vidgate.processing.pipeline import PipelineConfig, analyze


def run(path: Path, model_dir: Path, model_type: str = "resnet50", **config: object) -> object:
    return analyze(
        path,
        video_id="v",
        content_hash="h",
        model_type=model_type,
        config=PipelineConfig(model_dir=model_dir, **config),  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_scene_video(tmp_path_factory.mktemp("pipeline") / "scenes.mp4", seconds=12, scene_seconds=4)


def test_metadata_keyframes_samples_and_scene_cuts(scenes: Path, tmp_path: Path) -> None:
    stages: list[tuple[str, float]] = []
    result = analyze(
        scenes,
        video_id="v",
        content_hash="h",
        model_type="resnet50",
        config=PipelineConfig(model_dir=tmp_path),
        progress=lambda stage, fraction: stages.append((stage, fraction)),
    )
    meta = result.metadata
    assert (meta.video.codec, meta.video.width, meta.video.height) == ("h264", 320, 180)
    assert meta.video.fps == pytest.approx(25)
    assert meta.duration == pytest.approx(12, abs=0.1)
    assert meta.bitrate and meta.bitrate > 0
    assert meta.audio == []
    assert result.keyframes.count >= 1 and result.keyframes.timestamps[0] == 0.0
    assert [round(s.timestamp) for s in result.samples] == list(range(12))
    assert all(len(s.phash) == 16 for s in result.samples)
    assert result.statistics.decoded_frames == 300
    assert any(abs(cut - 4.0) < 0.1 for cut in result.statistics.scene_cuts)
    assert any(abs(cut - 8.0) < 0.1 for cut in result.statistics.scene_cuts)
    assert len(result.fingerprint) == 16
    assert [stage for stage, _ in stages][:2] == ["metadata", "keyframes"]
    assert stages[-1] == ("embeddings", 1.0)
    assert {s.name for s in result.stages} >= {"metadata", "keyframes", "decode", "statistics", "phash"}


def test_dense_keyframes_are_sampled_by_seeking(tmp_path: Path) -> None:
    path = make_scene_video(tmp_path / "gop.mp4", seconds=6, options={"g": "25", "preset": "veryfast"})
    result = run(path, tmp_path, vpdq=False)
    assert result.statistics.sampling == "seek"  # type: ignore[attr-defined]
    assert [s.timestamp for s in result.samples] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]  # type: ignore[attr-defined]
    with_vpdq = run(path, tmp_path)  # vPDQ counts every frame: the same samples, decoded in sequence
    assert with_vpdq.statistics.sampling == "sequential"  # type: ignore[attr-defined]
    assert [s.phash for s in with_vpdq.samples] == [s.phash for s in result.samples]  # type: ignore[attr-defined]


def _solid_video(path: Path, colours: list[tuple[int, int, int]], seconds_each: int = 2) -> Path:
    with av.open(str(path), "w") as output:
        stream = output.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        index = 0
        for colour in colours:
            image = np.zeros((48, 64, 3), np.uint8) + np.array(colour, np.uint8)
            for _ in range(25 * seconds_each):
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts, frame.time_base = index, Fraction(1, 25)
                index += 1
                for packet in stream.encode(frame):
                    output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return path


def test_black_and_frozen_stretches(tmp_path: Path) -> None:
    path = _solid_video(tmp_path / "solid.mp4", [(0, 0, 0), (200, 30, 30)], seconds_each=3)
    stats = run(path, tmp_path).statistics  # type: ignore[attr-defined]
    assert stats.black_segments and stats.black_segments[0].start == 0.0
    assert stats.black_segments[0].end == pytest.approx(3.0, abs=0.1)
    assert stats.frozen_segments  # nothing moves at all
    assert any(abs(cut - 3.0) < 0.1 for cut in stats.scene_cuts)


def test_embeddings_run_the_model_on_normalised_frames(tmp_path: Path) -> None:
    """A model that returns each channel's mean shows what preprocessing fed it."""
    channel_mean_model(tmp_path / "tiny.onnx")
    path = _solid_video(tmp_path / "red.mp4", [(255, 0, 0)], seconds_each=9)
    result = run(path, tmp_path, model_type="tiny", batch_size=4)
    embedding = result.embeddings  # type: ignore[attr-defined]
    assert embedding.status == "ok" and embedding.dimension == 3 and embedding.frames == 9
    red = (np.array([1.0, 0.0, 0.0]) - IMAGENET_MEAN.ravel()) / IMAGENET_STD.ravel()
    expected = red / np.linalg.norm(red)
    assert np.allclose(embedding.video_embedding, expected, atol=0.03)


def test_registry_maps_names_to_files(tmp_path: Path) -> None:
    channel_mean_model(tmp_path / "custom-name.onnx")
    path = _solid_video(tmp_path / "v.mp4", [(10, 200, 10)])
    result = run(path, tmp_path, model_type="resnet50", model_files={"resnet50": "custom-name.onnx"})
    assert result.embeddings.status == "ok"  # type: ignore[attr-defined]


def test_missing_or_broken_model_is_said_plainly_and_the_rest_completes(scenes: Path, tmp_path: Path) -> None:
    missing = run(scenes, tmp_path)  # the shipped network stands in, and says why
    assert missing.embeddings.status == "ok"  # type: ignore[attr-defined]
    assert missing.embeddings.model_type.startswith("open_nsfw")  # type: ignore[attr-defined]
    assert "resnet50.onnx not found" in missing.embeddings.reason  # type: ignore[attr-defined]
    assert len(missing.samples) == 12  # type: ignore[attr-defined]
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    broken = run(scenes, tmp_path, model_type="broken")
    assert broken.embeddings.status == "failed"  # type: ignore[attr-defined]
    bad_name = run(scenes, tmp_path, model_type="../etc/passwd").embeddings  # type: ignore[attr-defined]
    assert bad_name.requested_model_type == "../etc/passwd" and "not a valid model name" in bad_name.reason


def test_phash_is_stable_under_resize_and_recompression(scenes: Path, tmp_path: Path) -> None:
    small = make_scene_video(
        tmp_path / "small.mkv", seconds=12, width=160, height=90, fmt="matroska", codec="mpeg4", options={"b": "200000"}
    )
    a = [int(s.phash, 16) for s in run(scenes, tmp_path).samples]  # type: ignore[attr-defined]
    b = [int(s.phash, 16) for s in run(small, tmp_path).samples]  # type: ignore[attr-defined]
    assert max(hamming(x, y) for x, y in zip(a, b, strict=True)) <= 12
    assert min(hamming(a[0], y) for y in a[5:]) > 12  # other scenes are far
    assert hamming(majority(a), majority(b)) <= 8


def test_phash_helpers() -> None:
    gradient = np.tile(np.arange(32, dtype=np.uint8) * 8, (32, 1))
    value = phash(gradient)
    assert phash(gradient) == value
    assert phash(gradient.T) != value
    assert bands(0x0123456789ABCDEF) == [0x0123, 0x4567, 0x89AB, 0xCDEF]
    assert majority([0b1100, 0b1010, 0b1000]) == 0b1000


def test_audio_streams_and_rotation_are_reported(tmp_path: Path) -> None:
    from tests.media import make_video, make_video_with_audio, rotate_mp4

    with_audio = run(make_video_with_audio(tmp_path / "audio.mp4"), tmp_path).metadata  # type: ignore[attr-defined]
    assert [(a.codec, a.sample_rate, a.channels) for a in with_audio.audio] == [("aac", 48000, 2)]
    rotated = run(rotate_mp4(make_video(tmp_path / "phone.mp4", frames=10)), tmp_path).metadata  # type: ignore[attr-defined]
    assert abs(rotated.video.rotation) == 90
