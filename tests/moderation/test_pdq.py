"""PDQ through the reference's compiled core with the reference's float32 luma: equal, frame by
frame, to what the vPDQ reference (``vpdq`` 0.2.5) computes on real clips."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import vpdq

from tests.sample_clips import clips  # noqa: F401  (fixture)
from vidgate.moderation.pdq import distance, luma, pdq, pdq_dihedral


@pytest.mark.parametrize("name", ["bigbuckbunny", "bikes", "carphone_pristine", "carphone_distorted"])
def test_every_frame_equals_the_reference(clips: dict[str, Path], name: str) -> None:  # noqa: F811
    reference = sorted(vpdq.computeHash(str(clips[name]), seconds_per_hash=0), key=lambda f: f.frame_number)
    with av.open(str(clips[name])) as container:
        mine = [pdq(frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]
    assert len(mine) == len(reference) > 100
    assert [(h.hex, h.quality) for h in mine] == [(f.hex, f.quality) for f in reference]


def test_luma_is_computed_in_float32_like_the_reference() -> None:
    rgb = np.array([[[255, 128, 7], [1, 2, 3]]], dtype=np.uint8)
    expected = np.float32(0.299) * np.float32(255) + np.float32(0.587) * np.float32(128)
    expected = expected + np.float32(0.114) * np.float32(7)
    assert luma(rgb).dtype == np.float32 and luma(rgb)[0, 0] == expected


def test_dihedral_hashes_see_a_mirrored_frame(clips: dict[str, Path]) -> None:  # noqa: F811
    with av.open(str(clips["bikes"])) as container:
        rgb = next(container.decode(video=0)).to_ndarray(format="rgb24")
    hashes, quality = pdq_dihedral(rgb)
    assert hashes["original"] == pdq(rgb).hex and quality == pdq(rgb).quality
    mirrored = pdq(np.ascontiguousarray(rgb[:, ::-1])).hex
    assert distance(mirrored, hashes["original"]) > 64  # PDQ alone does not survive a flip...
    assert distance(mirrored, hashes["flip_y"]) <= 8  # ...its mirrored variant does


def test_too_small_frames_are_refused() -> None:
    with pytest.raises(ValueError, match="too small"):
        pdq(np.zeros((4, 64, 3), dtype=np.uint8))
