"""Processing speed as a multiple of real time, per stage, on one core.

    .venv/bin/python bench/pipeline.py [--seconds 60] [--runs 3]

Generates a 60 s 1280x720 H.264 clip, pins this process to one CPU, and compares in the
same run: a bare PyAV decode of every frame (the baseline: what any analysis must pay), the
default pipeline (metadata, keyframes, sampling + frame statistics, pHash, vPDQ, moderation
with the shipped open_nsfw network, embeddings from its pooled layer; no model file), the
same pipeline making the poster and storyboard too, and the vPDQ reference
(``vpdq.computeHash``, one thread) on the same file: what calling it directly would add (its
own decode) instead of hashing the frames the pipeline decodes anyway.
Goals: the default pipeline at least 10x faster than real time; pictures add < 10 %.
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

from vidgate.moderation.nsfw import shared_network
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


def vpdq_reference(path: Path) -> float | None:
    try:
        import vpdq
    except ImportError:  # a test dependency; the bench runs without it
        return None
    started = time.perf_counter()
    vpdq.computeHash(str(path), seconds_per_hash=1.0, thread_count=1)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    shared_network()  # loaded once per process (about a second), not per video
    with tempfile.TemporaryDirectory(prefix="vidgate-bench-") as tmp:
        root = Path(tmp)
        clip = make_scene_video(root / "clip.mp4", seconds=args.seconds, width=1280, height=720)
        config = PipelineConfig(model_dir=root / "none", decode_threads=1)
        pictured = PipelineConfig(model_dir=root / "none", decode_threads=1, pictures=PictureConfig())
        (root / "pictures").mkdir()
        decode = statistics.median(decode_only(clip) for _ in range(args.runs))
        runs = [
            analyze(clip, video_id="b", content_hash="b", model_type="resnet50", config=config)
            for _ in range(args.runs)
        ]
        pictured_runs = [
            analyze(
                clip,
                video_id="b",
                content_hash="b",
                model_type="resnet50",
                config=pictured,
                pictures_dir=root / "pictures",
            )
            for _ in range(args.runs)
        ]
        reference = [vpdq_reference(clip) for _ in range(args.runs)]
    print(f"clip: {args.seconds:.0f} s, 1280x720 H.264, 25 fps; one core; median of {args.runs} runs\n")
    print(f"{'what':<44}{'seconds':>9}{'x real time':>13}")
    print(f"{'baseline: PyAV decode only':<44}{decode:>9.2f}{args.seconds / decode:>13.1f}")
    total = statistics.median(r.processing_seconds for r in runs)
    print(f"{'whole pipeline (default install)':<44}{total:>9.2f}{args.seconds / total:>13.1f}")
    pictured_total = statistics.median(r.processing_seconds for r in pictured_runs)
    print(f"{'whole pipeline + poster and storyboard':<44}{pictured_total:>9.2f}{args.seconds / pictured_total:>13.1f}")
    if all(r is not None for r in reference):
        ref = statistics.median(r for r in reference if r is not None)
        print(f"{'vpdq reference alone (its own decode)':<44}{ref:>9.2f}{args.seconds / ref:>13.1f}")
    pictures_stage = statistics.median(next(s.seconds for s in r.stages if s.name == "pictures") for r in pictured_runs)
    print(
        f"\npictures: {pictures_stage:.3f} s in their own stage = {100 * pictures_stage / total:.1f} % of the"
        f" default pipeline; whole-run difference {100 * (pictured_total - total) / total:+.1f} %"
    )
    print("\nper stage (median):")
    stages: dict[str, list[float]] = {}
    for result in runs:
        for stage in result.stages:
            stages.setdefault(stage.name, []).append(stage.seconds)
    for name, values in stages.items():
        seconds = statistics.median(values)
        speed = f"{args.seconds / seconds:>13.1f}" if seconds > 0 else f"{'-':>13}"
        print(f"  {name:<42}{seconds:>9.3f}{speed}")
    embeddings = runs[0].embeddings
    print(f"\nembeddings: {embeddings.model_type}, {embeddings.dimension}-d, {embeddings.frames} frames")


if __name__ == "__main__":
    main()
