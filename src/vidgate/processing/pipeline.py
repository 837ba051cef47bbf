"""The analysis pipeline: one pass of decoding feeds every analyzer.

Stages, reported through ``progress(stage, fraction)``:
1. ``metadata``   container, codecs, duration, fps, resolution, bitrate, audio, rotation;
2. ``keyframes``  keyframe index from a demux pass (no decoding), then one frame per
                  ``sample_interval`` seconds, by seeking when keyframes are dense enough
                  and by sequential decoding otherwise, with frame statistics (black and
                  frozen stretches, motion, scene cuts) on every decoded frame;
3. ``phash``      a 64-bit DCT hash per sampled frame (black bars cut off first, and of the
                  mirrored frame too, so letterboxed and flipped copies are found) and the
                  video fingerprint;
   ``vpdq``       PDQ hashes per ``vpdq_seconds_per_hash`` exactly as the vPDQ reference, on the
                  same decoded frames (vPDQ counts every frame, so the decode is sequential
                  when it is on), plus MD5 and SHA-256 of the file;
4. ``moderation`` the shipped open_nsfw classifier on every sampled frame: scores, verdict;
5. ``embeddings`` ONNX frame embeddings from the model file in the model directory, or, when
                  there is none, the open_nsfw network's pooled layer (same forward pass as
                  moderation, so its time is counted there).
6. ``pictures``   poster and storyboard from the sampled frames (:mod:`vidgate.processing.pictures`).
PyAV errors are translated to :class:`PipelineError` here, at the adapter boundary.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from vidgate.moderation.models import ModerationResult, NsfwResult
from vidgate.moderation.nsfw import ClassifierUnavailable, OpenNsfwNetwork, model_label, shared_network
from vidgate.processing.analyzers.embeddings import INPUT_SIZE, Embedder, ModelRegistry
from vidgate.processing.analyzers.framestats import FrameStats
from vidgate.processing.analyzers.metadata import read_metadata
from vidgate.processing.analyzers.moderation import INPUT_SIZE as MODERATION_SIZE
from vidgate.processing.analyzers.moderation import ModerationStage, verdict
from vidgate.processing.analyzers.phash import BARS_SIZE, majority, phash, to_hex, without_bars
from vidgate.processing.analyzers.vpdq import VpdqStage
from vidgate.processing.models import (
    EmbeddingResult,
    FrameSample,
    FrameStatistics,
    KeyframeIndex,
    StageTiming,
    VideoAnalysisResult,
)
from vidgate.processing.pictures import PictureMaker
from vidgate.processing.stages import PipelineConfig, PipelineError

__all__ = ["PIPELINE_VERSION", "PipelineConfig", "PipelineError", "Progress", "analyze"]

PIPELINE_VERSION = "2"
TIMED_IN_THE_DECODE_LOOP = ("statistics", "phash", "vpdq", "moderation", "embeddings", "pictures")
STATS_WIDTH, STATS_HEIGHT = 64, 36
SEEK_IF_KEYFRAME_INTERVAL_AT_MOST = 1.5  # seconds; sparser keyframes make seeking decode more than a pass
KEYFRAME_LIST_LIMIT = 10_000

Progress = Callable[[str, float], None]


@dataclass
class _Timer:
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, started: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started


def analyze(
    path: Path | BinaryIO,
    *,
    video_id: str,
    content_hash: str,
    model_type: str,
    config: PipelineConfig,
    progress: Progress | None = None,
    pictures_dir: Path | None = None,
) -> VideoAnalysisResult:
    """Analyse the video at ``path`` (a file, or a seekable binary file object such as a stored
    video read from S3); with ``pictures_dir`` (and ``config.pictures``) also write its poster
    and storyboard there."""
    import av

    report = progress or (lambda stage, fraction: None)
    started = time.perf_counter()
    timer = _Timer()
    try:
        size = path.stat().st_size if isinstance(path, Path) else path.seek(0, io.SEEK_END)
        if not isinstance(path, Path):
            path.seek(0)
        with av.open(str(path) if isinstance(path, Path) else path) as container:
            t = time.perf_counter()
            metadata = read_metadata(container, size)
            timer.add("metadata", t)
            report("metadata", 0.05)

            t = time.perf_counter()
            keyframes = _keyframe_index(container)
            timer.add("keyframes", t)
            report("keyframes", 0.1)

            embedder = Embedder.open(ModelRegistry(config.model_dir, config.model_files), model_type, config.batch_size)
            stand_in = isinstance(embedder, EmbeddingResult) and embedder.status == "unavailable"
            network: OpenNsfwNetwork | None = None
            network_problem = None
            if config.moderation or stand_in:
                try:
                    network = shared_network()
                except ClassifierUnavailable as exc:
                    network_problem = str(exc)
            moderation = (
                ModerationStage(
                    network,
                    threshold=config.nsfw_threshold,
                    min_frames=config.nsfw_min_frames,
                    batch_size=config.batch_size,
                )
                if network is not None
                else None
            )
            stats = FrameStats()
            samples: list[FrameSample] = []
            hashes: list[int] = []
            duration = metadata.duration or 0.0
            seek = (
                not config.vpdq
                and keyframes.mean_interval is not None
                and keyframes.mean_interval <= SEEK_IF_KEYFRAME_INTERVAL_AT_MOST
            )
            vpdq = VpdqStage(container.streams.video[0], config.vpdq_seconds_per_hash) if config.vpdq else None
            frames = _seek_samples if seek else _sequential_samples
            pictures = (
                PictureMaker(
                    config.pictures,
                    width=metadata.video.width,
                    height=metadata.video.height,
                    duration=duration,
                    sample_interval=config.sample_interval,
                )
                if config.pictures is not None and pictures_dir is not None
                else None
            )
            decode_started = time.perf_counter()
            rotation = 0
            for frame_number, (timestamp, frame, is_sample) in enumerate(frames(container, config, duration)):
                if vpdq is not None and vpdq.wants(frame_number):
                    t = time.perf_counter()
                    vpdq.add(frame_number, frame)
                    timer.add("vpdq", t)
                t = time.perf_counter()
                gray = frame.reformat(width=STATS_WIDTH, height=STATS_HEIGHT, format="gray").to_ndarray()
                luma, motion = stats.add(timestamp, gray)
                timer.add("statistics", t)
                if not is_sample:
                    continue
                rotation = rotation or int(getattr(frame, "rotation", 0) or 0)
                t = time.perf_counter()
                picture = without_bars(
                    frame.reformat(width=BARS_SIZE, height=BARS_SIZE, format="gray", interpolation="AREA").to_ndarray()
                )
                value, mirrored = phash(picture), phash(picture[:, ::-1])
                hashes.append(value)
                samples.append(
                    FrameSample(
                        timestamp=round(timestamp, 3),
                        phash=to_hex(value),
                        phash_mirror=to_hex(mirrored),
                        mean_luma=round(luma, 2),
                        motion=round(motion, 2),
                    )
                )
                timer.add("phash", t)
                if pictures is not None:
                    t = time.perf_counter()
                    pictures.add(timestamp, frame, luma)
                    timer.add("pictures", t)
                if moderation is not None:
                    t = time.perf_counter()
                    moderation.add(
                        timestamp,
                        frame.reformat(
                            width=MODERATION_SIZE, height=MODERATION_SIZE, format="bgr24", interpolation="BILINEAR"
                        ).to_ndarray(),
                    )
                    timer.add("moderation", t)
                if isinstance(embedder, Embedder):
                    t = time.perf_counter()
                    embedder.add(frame.reformat(width=INPUT_SIZE, height=INPUT_SIZE, format="rgb24").to_ndarray())
                    timer.add("embeddings", t)
                if duration:
                    report("sampling", 0.1 + 0.8 * min(1.0, timestamp / duration))
            stats.finish(duration)
            decode_total = time.perf_counter() - decode_started
            timer.seconds["decode"] = max(
                0.0, decode_total - sum(timer.seconds.get(s, 0.0) for s in TIMED_IN_THE_DECODE_LOOP)
            )
            if pictures is not None and pictures_dir is not None:
                t = time.perf_counter()
                pictures.finish(pictures_dir)
                timer.add("pictures", t)
    except av.FFmpegError as exc:
        raise PipelineError(f"the video could not be decoded: {exc}") from exc

    t = time.perf_counter()
    fingerprint = to_hex(majority(hashes))
    timer.add("phash", t)
    t = time.perf_counter()
    video_hashes = vpdq.finish(path) if vpdq is not None else None
    timer.add("vpdq", t)
    t = time.perf_counter()
    nsfw = (
        moderation.finish()
        if moderation is not None
        else NsfwResult(
            status="unavailable", model=model_label(), reason=network_problem, threshold=config.nsfw_threshold
        )
    )
    moderation_result: ModerationResult | None = verdict(nsfw, config.nsfw_min_frames) if config.moderation else None
    timer.add("moderation", t)
    t = time.perf_counter()
    embeddings: EmbeddingResult = embedder.finish() if isinstance(embedder, Embedder) else embedder
    if stand_in and moderation is not None:
        embeddings = moderation.embedding(model_type, why=f"{embeddings.reason}; the shipped network stands in")
    timer.add("embeddings", t)
    report("embeddings", 1.0)
    metadata.video.rotation = rotation
    motions = stats.motion or [0.0]
    return VideoAnalysisResult(
        video_id=video_id,
        content_hash=content_hash,
        pipeline_version=PIPELINE_VERSION,
        metadata=metadata,
        keyframes=keyframes,
        samples=samples,
        statistics=FrameStatistics(
            decoded_frames=stats.frames,
            sampling="seek" if seek else "sequential",
            scene_cuts=stats.cuts,
            black_segments=stats.black,
            frozen_segments=stats.frozen,
            mean_motion=round(float(np.mean(motions)), 3),
            max_motion=round(float(np.max(motions)), 3),
        ),
        fingerprint=fingerprint,
        embeddings=embeddings,
        moderation=moderation_result,
        hashes=video_hashes,
        stages=[StageTiming(name=name, seconds=round(seconds, 4)) for name, seconds in timer.seconds.items()],
        processing_seconds=round(time.perf_counter() - started, 4),
        created_at=datetime.now(UTC),
    )


def _keyframe_index(container: Any) -> KeyframeIndex:
    video = container.streams.video[0]
    times: list[float] = []
    for packet in container.demux(video):
        if packet.is_keyframe and packet.pts is not None and packet.time_base is not None:
            times.append(float(packet.pts * packet.time_base))
    container.seek(0)
    times.sort()
    intervals = np.diff(times) if len(times) > 1 else np.array([])
    return KeyframeIndex(
        count=len(times),
        timestamps=[round(t, 3) for t in times[:KEYFRAME_LIST_LIMIT]],
        mean_interval=round(float(intervals.mean()), 3) if intervals.size else None,
    )


def _prepare(container: Any, config: PipelineConfig) -> Any:
    video = container.streams.video[0]
    video.thread_type = "AUTO" if config.decode_threads != 1 else "SLICE"
    video.codec_context.thread_count = config.decode_threads
    return video


def _frame_time(frame: Any) -> float:
    return float(frame.time) if frame.time is not None else 0.0


def _sequential_samples(container: Any, config: PipelineConfig, duration: float) -> Iterator[tuple[float, Any, bool]]:
    """Decode every frame; the first frame at or after each sample time is a sample."""
    video = _prepare(container, config)
    next_sample = 0.0
    for frame in container.decode(video):
        timestamp = _frame_time(frame)
        is_sample = timestamp + 1e-6 >= next_sample
        if is_sample:
            next_sample = (int(timestamp / config.sample_interval) + 1) * config.sample_interval
        yield timestamp, frame, is_sample


def _seek_samples(container: Any, config: PipelineConfig, duration: float) -> Iterator[tuple[float, Any, bool]]:
    """Seek to the keyframe before each sample time and decode forward to it."""
    video = _prepare(container, config)
    time_base = video.time_base
    target = 0.0
    last = -1.0
    while target <= max(duration, 0.0) + 1e-6:
        container.seek(int(target / time_base), stream=video, backward=True)
        taken = False
        for frame in container.decode(video):
            timestamp = _frame_time(frame)
            if timestamp + 1e-6 < target:
                continue
            if timestamp > last:
                yield timestamp, frame, True
                last = timestamp
            taken = True
            break
        if not taken:
            break
        target = (int(last / config.sample_interval) + 1) * config.sample_interval
