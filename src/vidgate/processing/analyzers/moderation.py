"""The moderation stage: the shipped classifier on every sampled frame, the video's verdict,
and (for free, from the same forward pass) the pooled-layer embedding."""

from __future__ import annotations

import numpy as np

from vidgate.moderation.models import FlagReason, FrameScore, ModerationResult, NsfwResult
from vidgate.moderation.nsfw import RESIZE, OpenNsfwNetwork, preprocess
from vidgate.processing.models import EmbeddingResult

INPUT_SIZE = RESIZE  # frames arrive as 256x256 BGR; the network takes their centre


class ModerationStage:
    """Collects sampled frames, runs them ``batch_size`` at a time, keeps every frame's score
    and the sum of the pooled features (for the video embedding)."""

    def __init__(self, network: OpenNsfwNetwork, *, threshold: float, min_frames: int, batch_size: int) -> None:
        self.network = network
        self.threshold = threshold
        self.min_frames = min_frames
        self.batch_size = batch_size
        self._pending: list[np.ndarray] = []
        self._times: list[float] = []
        self.scores: list[FrameScore] = []
        self._pooled_sum: np.ndarray | None = None

    def add(self, timestamp: float, bgr256: np.ndarray) -> None:
        self._pending.append(preprocess(bgr256))
        self._times.append(timestamp)
        if len(self._pending) >= self.batch_size:
            self._run()

    def _run(self) -> None:
        if not self._pending:
            return
        output = self.network.run(np.stack(self._pending))
        self.scores.extend(
            FrameScore(timestamp=round(t, 3), nsfw=round(float(p), 4))
            for t, p in zip(self._times, output.nsfw, strict=True)
        )
        total = output.pooled.sum(axis=0)
        self._pooled_sum = total if self._pooled_sum is None else self._pooled_sum + total
        self._pending.clear()
        self._times.clear()

    def finish(self) -> NsfwResult:
        self._run()
        if not self.scores:
            return NsfwResult(status="failed", model=self.network.label, reason="no frames", threshold=self.threshold)
        values = np.array([s.nsfw for s in self.scores])
        return NsfwResult(
            status="ok",
            model=self.network.label,
            threshold=self.threshold,
            frames=len(values),
            max=round(float(values.max()), 4),
            mean=round(float(values.mean()), 4),
            share_over_threshold=round(float((values >= self.threshold).mean()), 4),
            frame_scores=self.scores,
        )

    def embedding(self, requested_model_type: str, why: str) -> EmbeddingResult:
        """The mean pooled feature vector, L2-normalised, named as what it is."""
        self._run()
        if self._pooled_sum is None or not self.scores:
            return EmbeddingResult(status="failed", model_type=self.network.label, reason="no frames")
        mean = self._pooled_sum / len(self.scores)
        norm = float(np.linalg.norm(mean)) or 1.0
        return EmbeddingResult(
            status="ok",
            model_type=self.network.label,
            model_file=f"{self.network.label}: pooled layer {self.network.pooled}",
            requested_model_type=requested_model_type,
            reason=why,
            dimension=int(mean.shape[0]),
            frames=len(self.scores),
            video_embedding=[round(float(v), 6) for v in mean / norm],
        )


def verdict(nsfw: NsfwResult, min_frames: int) -> ModerationResult:
    """Flag a video when at least ``min_frames`` sampled frames reach the threshold."""
    reasons = []
    over = round((nsfw.share_over_threshold or 0.0) * nsfw.frames)
    if nsfw.status == "ok" and over >= max(1, min_frames):
        reasons.append(
            FlagReason(
                code="nsfw",
                message=f"{over} of {nsfw.frames} sampled frames scored at least {nsfw.threshold} "
                f"for explicit content (max {nsfw.max})",
            )
        )
    return ModerationResult(flagged=bool(reasons), reasons=reasons, nsfw=nsfw)
