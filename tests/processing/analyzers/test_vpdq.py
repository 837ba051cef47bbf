"""vPDQ in the pipeline, from the frames it decodes anyway: the same text as the reference's
output for the same file and seconds-per-hash, on real clips."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import vpdq

from tests.sample_clips import clips  # noqa: F401  (fixture)
from vidgate.processing.analyzers.vpdq import file_digests, parse_text, to_text
from vidgate.processing.pipeline import PipelineConfig, analyze


def reference_text(path: Path, seconds_per_hash: float) -> str:
    features = sorted(vpdq.computeHash(str(path), seconds_per_hash=seconds_per_hash), key=lambda f: f.frame_number)
    return "".join(f"{f.frame_number},{f.quality},{f.hex},{f.timestamp:.3f}\n" for f in features)


@pytest.mark.parametrize("seconds_per_hash", [1.0, 0.5, 0.0])
@pytest.mark.parametrize("name", ["bigbuckbunny", "bikes", "carphone_pristine", "carphone_distorted"])
def test_pipeline_vpdq_equals_the_reference(
    clips: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    name: str,
    seconds_per_hash: float,
) -> None:
    config = PipelineConfig(model_dir=tmp_path, vpdq_seconds_per_hash=seconds_per_hash, moderation=False)
    result = analyze(clips[name], video_id="v", content_hash="h", model_type="resnet50", config=config)
    assert result.hashes is not None
    assert to_text(result.hashes.vpdq) == reference_text(clips[name], seconds_per_hash)
    assert result.statistics.sampling == "sequential"  # vPDQ counts every frame
    assert result.hashes.poster is not None and result.hashes.poster.quality >= 50
    data = clips[name].read_bytes()
    assert result.hashes.md5 == hashlib.md5(data).hexdigest()
    assert result.hashes.sha256 == hashlib.sha256(data).hexdigest()


def test_without_vpdq_there_are_no_hashes(clips: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    config = PipelineConfig(model_dir=tmp_path, vpdq=False, moderation=False)
    result = analyze(clips["carphone_pristine"], video_id="v", content_hash="h", model_type="x", config=config)
    assert result.hashes is None


def test_text_format_round_trips_and_bad_lines_are_named(clips: dict[str, Path]) -> None:  # noqa: F811
    text = reference_text(clips["carphone_pristine"], 1.0)
    assert to_text(parse_text(text)) == text
    with pytest.raises(ValueError, match="line 2"):
        parse_text(text.splitlines()[0] + "\n1,100,nothex,0.1\n")
    with pytest.raises(ValueError, match="line 1: expected"):
        parse_text("abc")


def test_file_digests_stream_the_file(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"x" * (3 << 20) + b"tail")
    data = path.read_bytes()
    assert file_digests(path) == (hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest())
