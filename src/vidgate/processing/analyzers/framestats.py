"""Cheap per-frame statistics on a small grey picture: black and frozen stretches, motion,
scene cuts."""

from __future__ import annotations

import numpy as np

from vidgate.processing.models import Segment

BLACK_LUMA = 24.0  # mean luma (0-255) under which a frame counts as black
FROZEN_MOTION = 0.5  # mean absolute change under which a frame repeats the previous one
CUT_HISTOGRAM_DISTANCE = 0.3  # a third of the histogram mass moved...
CUT_MOTION = 30.0  # ...or the picture changed by this much on average: a new shot
MIN_SEGMENT = 1.0  # seconds a black or frozen stretch must last to be reported


class FrameStats:
    def __init__(self) -> None:
        self.frames = 0
        self._previous: np.ndarray | None = None
        self._previous_histogram: np.ndarray | None = None
        self.motion: list[float] = []
        self.cuts: list[float] = []
        self.black: list[Segment] = []
        self.frozen: list[Segment] = []
        self._black_start: float | None = None
        self._frozen_start: float | None = None
        self._last_time = 0.0

    def add(self, timestamp: float, gray: np.ndarray) -> tuple[float, float]:
        """Account one frame; return its (mean luma, motion since the previous frame)."""
        self.frames += 1
        pixels = gray.astype(np.int16)
        luma = float(pixels.mean())
        histogram = np.bincount((gray >> 4).ravel(), minlength=16).astype(np.float64)
        histogram /= histogram.sum()
        motion = 0.0
        if self._previous is not None and self._previous_histogram is not None:
            motion = float(np.abs(pixels - self._previous).mean())
            self.motion.append(motion)
            distance = 0.5 * float(np.abs(histogram - self._previous_histogram).sum())
            if distance > CUT_HISTOGRAM_DISTANCE or motion > CUT_MOTION:
                self.cuts.append(round(timestamp, 3))
            self._track("frozen", timestamp, motion < FROZEN_MOTION)
        self._track("black", timestamp, luma < BLACK_LUMA)
        self._previous, self._previous_histogram = pixels, histogram
        self._last_time = timestamp
        return luma, motion

    def _track(self, kind: str, timestamp: float, active: bool) -> None:
        attribute = f"_{kind}_start"
        start = getattr(self, attribute)
        if active and start is None:
            setattr(self, attribute, self._last_time if kind == "frozen" else timestamp)
        elif not active and start is not None:
            self._close(kind, start, timestamp)
            setattr(self, attribute, None)

    def _close(self, kind: str, start: float, end: float) -> None:
        if end - start >= MIN_SEGMENT:
            getattr(self, kind).append(Segment(start=round(start, 3), end=round(end, 3)))

    def finish(self, end_time: float) -> None:
        for kind in ("black", "frozen"):
            start = getattr(self, f"_{kind}_start")
            if start is not None:
                self._close(kind, start, end_time)
