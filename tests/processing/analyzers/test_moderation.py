"""The moderation stage in the pipeline: scores and verdict from the shipped classifier, and the
pooled-layer embedding standing in when no model file is installed."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tests.processing.onnx_models import channel_mean_model
from tests.sample_clips import clips  # noqa: F401  (fixture)
from vidgate.processing.models import VideoAnalysisResult
from vidgate.processing.pipeline import PipelineConfig, analyze


def run(path: Path, model_dir: Path, **config: object) -> VideoAnalysisResult:
    return analyze(
        path,
        video_id="v",
        content_hash="h",
        model_type="resnet50",
        config=PipelineConfig(model_dir=model_dir, **config),  # type: ignore[arg-type]
    )


def reencode(source: Path, target: Path, width: int, height: int) -> Path:
    """A smaller, lower-quality H.264 copy (what a re-upload of the same video looks like)."""
    with av.open(str(source)) as src, av.open(str(target), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"crf": "35", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index, frame in enumerate(src.decode(video=0)):
            picture = frame.reformat(width=width, height=height, format="yuv420p")
            picture.pts, picture.time_base = index, Fraction(1, 25)
            for packet in stream.encode(picture):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return target


def test_default_install_scores_every_sample_and_embeds_with_the_shipped_network(
    clips: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    result = run(clips["bikes"], tmp_path / "no-models")
    moderation = result.moderation
    assert moderation is not None
    assert moderation.nsfw.status == "ok"
    assert moderation.nsfw.frames == len(result.samples) == 10
    assert [s.timestamp for s in moderation.nsfw.frame_scores] == [s.timestamp for s in result.samples]
    assert moderation.nsfw.max is not None and moderation.nsfw.max < 0.8
    assert not moderation.flagged and moderation.reasons == []
    embeddings = result.embeddings
    assert embeddings.status == "ok"
    assert embeddings.model_type.startswith("open_nsfw")
    assert embeddings.requested_model_type == "resnet50"
    assert embeddings.reason is not None and "not found" in embeddings.reason
    assert embeddings.dimension == 1024 and embeddings.frames == 10
    assert abs(np.linalg.norm(embeddings.video_embedding) - 1) < 1e-4
    assert "moderation" in {s.name for s in result.stages}


def test_verdict_follows_the_threshold_and_the_frame_count(clips: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    flagged = run(clips["carphone_pristine"], tmp_path, nsfw_threshold=0.0)
    assert flagged.moderation is not None and flagged.moderation.flagged
    assert [r.code for r in flagged.moderation.reasons] == ["nsfw"]
    assert flagged.moderation.nsfw.share_over_threshold == 1.0
    samples = len(flagged.samples)
    assert f"{samples} of {samples} sampled frames" in flagged.moderation.reasons[0].message
    too_few = run(clips["carphone_pristine"], tmp_path, nsfw_threshold=0.0, nsfw_min_frames=samples + 1)
    assert too_few.moderation is not None and not too_few.moderation.flagged


def test_an_installed_model_file_takes_precedence(clips: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    channel_mean_model(tmp_path / "resnet50.onnx")
    result = run(clips["carphone_pristine"], tmp_path)
    assert result.embeddings.status == "ok"
    assert (result.embeddings.model_type, result.embeddings.dimension) == ("resnet50", 3)
    assert result.embeddings.requested_model_type is None
    assert result.moderation is not None and result.moderation.nsfw.status == "ok"


def test_embeddings_without_moderation(clips: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    result = run(clips["carphone_pristine"], tmp_path, moderation=False)
    assert result.moderation is None
    assert result.embeddings.status == "ok" and result.embeddings.model_type.startswith("open_nsfw")


def test_pooled_embedding_tells_an_edited_copy_from_another_video(clips: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    original = run(clips["bikes"], tmp_path).embeddings.video_embedding
    copy = run(reencode(clips["bikes"], tmp_path / "copy.mp4", 320, 136), tmp_path).embeddings.video_embedding
    other = run(clips["bigbuckbunny"], tmp_path).embeddings.video_embedding
    assert original is not None and copy is not None and other is not None
    same, different = float(np.dot(original, copy)), float(np.dot(original, other))
    assert same > 0.9
    assert same - different > 0.15
