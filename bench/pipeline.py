"""Processing speed as a multiple of real time, per stage, on one core.

    .venv/bin/python bench/pipeline.py [--seconds 60] [--runs 3]

Generates a 60 s 1280x720 H.264 clip, pins this process to one CPU, and compares in the
same run: a bare PyAV decode of every frame (the baseline: what any analysis must pay), the
default pipeline (metadata, keyframes, sampling + frame statistics, pHash; no model file),
the pipeline with a tiny ONNX model (the embedding plumbing; a real ResNet-50 costs
what the model costs), and the default pipeline making the poster and storyboard too.
Goals: the default pipeline at least 4x faster than real time; pictures add < 10 %.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.media import make_scene_video
from tests.processing.onnx_models import channel_mean_model

from vidgate.processing.pictures import PictureConfig
from vidgate.processing.pipeline import PipelineConfig, analyze


def decode_only(path: Path) -> float:
    import av

    started = time.perf_counter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        for _ in container.decode(stream):
            pass
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    with tempfile.TemporaryDirectory(prefix="vidgate-bench-") as tmp:
        root = Path(tmp)
        clip = make_scene_video(root / "clip.mp4", seconds=args.seconds, width=1280, height=720)
        channel_mean_model(root / "tiny.onnx")
        plain = PipelineConfig(model_dir=root / "none", decode_threads=1)
        tiny = PipelineConfig(model_dir=root, decode_threads=1)
        pictured = PipelineConfig(model_dir=root / "none", decode_threads=1, pictures=PictureConfig())
        (root / "pictures").mkdir()
        decode = statistics.median(decode_only(clip) for _ in range(args.runs))
        results = {
            "default": [
                analyze(clip, video_id="b", content_hash="b", model_type="resnet50", config=plain)
                for _ in range(args.runs)
            ],
            "with poster + storyboard": [
                analyze(
                    clip,
                    video_id="b",
                    content_hash="b",
                    model_type="resnet50",
                    config=pictured,
                    pictures_dir=root / "pictures",
                )
                for _ in range(args.runs)
            ],
            "with tiny ONNX model": [
                analyze(clip, video_id="b", content_hash="b", model_type="tiny", config=tiny) for _ in range(args.runs)
            ],
        }
    print(f"clip: {args.seconds:.0f} s, 1280x720 H.264, 25 fps; one core; median of {args.runs} runs\n")
    print(f"{'what':<34}{'seconds':>9}{'x real time':>13}")
    print(f"{'baseline: PyAV decode only':<34}{decode:>9.2f}{args.seconds / decode:>13.1f}")
    for name, runs in results.items():
        total = statistics.median(r.processing_seconds for r in runs)
        print(f"{'pipeline, ' + name:<34}{total:>9.2f}{args.seconds / total:>13.1f}")
    # (measured before the ONNX runs: onnxruntime's idle threads share the one pinned core afterwards)
    default = statistics.median(r.processing_seconds for r in results["default"])
    pictured_total = statistics.median(r.processing_seconds for r in results["with poster + storyboard"])
    pictures_stage = statistics.median(
        next(s.seconds for s in r.stages if s.name == "pictures") for r in results["with poster + storyboard"]
    )
    print(
        f"\npictures: {pictures_stage:.3f} s in their own stage = {100 * pictures_stage / default:.1f} % of the"
        f" default pipeline; whole-run difference {100 * (pictured_total - default) / default:+.1f} %"
    )
    print("\nper stage (default pipeline, median):")
    stages: dict[str, list[float]] = {}
    for result in results["default"]:
        for stage in result.stages:
            stages.setdefault(stage.name, []).append(stage.seconds)
    embedding = statistics.median(
        next(s.seconds for s in r.stages if s.name == "embeddings") for r in results["with tiny ONNX model"]
    )
    stages["embeddings (tiny model)"] = [embedding]
    for name, values in stages.items():
        seconds = statistics.median(values)
        speed = f"{args.seconds / seconds:>13.1f}" if seconds > 0 else f"{'-':>13}"
        print(f"  {name:<32}{seconds:>9.3f}{speed}")


if __name__ == "__main__":
    main()
