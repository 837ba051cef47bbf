"""Real video files for tests, encoded with PyAV (milliseconds each)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def make_mp4(path: Path, *, frames: int = 50, width: int = 160, height: int = 120, seed: int = 1) -> Path:
    """Encode ``frames`` noise frames as H.264 in MP4. Noise keeps the file large enough to chunk
    (about 9 KB per 160x120 frame) and makes every seed's bytes different."""
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(frames):
            image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
