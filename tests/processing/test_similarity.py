"""Near-duplicates that survive a 20 % crop, a 1.25x speed change and a 5 s clip embedded in
another video, with the matching time ranges in both videos; unrelated clips do not match
(real clips, a real server, SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from tests.conftest import RunningServer, database_url_for, make_settings, running_server
from tests.helpers import post_chunk, wait_for_video
from tests.sample_clips import clips  # noqa: F401  (fixture)


@pytest.fixture
def own_server(backend: str, tmp_path: Path) -> Iterator[RunningServer]:
    with database_url_for(backend, tmp_path) as url, running_server(make_settings(tmp_path, url)) as server:
        yield server


def frames_of(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def write(path: Path, frames: list[np.ndarray]) -> Path:
    height, width = frames[0].shape[:2]
    width, height = width - width % 2, height - height % 2
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"crf": "23", "preset": "veryfast"})
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
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24").reformat(width, height).to_ndarray()


def crop(image: np.ndarray, share: float) -> np.ndarray:
    h, w = image.shape[:2]
    dy, dx = int(h * share / 2), int(w * share / 2)
    return image[dy : h - dy, dx : w - dx]


def upload(server: RunningServer, path: Path) -> str:
    with server.client("alice") as client:
        video_id = str(post_chunk(client, path.read_bytes(), filename=path.name).json()["data"]["video_id"])
        assert wait_for_video(client, video_id, timeout=180)["status"] == "completed"
    return video_id


def similar(server: RunningServer, video_id: str) -> dict[str, dict[str, Any]]:
    with server.client("alice") as client:
        found = client.get(f"/v1/videos/{video_id}/result").json()["data"]["similar_videos"]
    return {s["video_id"]: s for s in found}


def test_crop_speed_and_an_embedded_clip_are_found_with_time_ranges(
    own_server: RunningServer,
    clips: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    server = own_server
    source = frames_of(clips["bikes"])  # 250 frames, 10 s
    size = source[0].shape[1], source[0].shape[0]
    filler = [resize(f, *size) for f in frames_of(clips["carphone_pristine"])] * 3
    made = {
        "crop": write(tmp_path / "crop20.mp4", [crop(f, 0.2) for f in source]),
        "speed": write(tmp_path / "speed125.mp4", [source[int(i * 1.25)] for i in range(int(len(source) / 1.25))]),
        # 4 s of carphone, 5 s of bikes (its first 125 frames), 4 s of carphone
        "embedded": write(tmp_path / "embedded.mp4", filler[:100] + source[:125] + filler[100:200]),  # 13 s
        # 4 s of bikes in 12 s: shares 0.4 (of bikes) and 0.33, found by its frames' order alone
        "short": write(tmp_path / "short.mp4", filler[:100] + source[:100] + filler[100:200]),
    }
    original = upload(server, clips["bikes"])
    unrelated = upload(server, clips["carphone_pristine"])
    ids = {name: upload(server, path) for name, path in made.items()}

    crop_match = similar(server, ids["crop"])[original]
    assert crop_match["method"] == "embedding" and crop_match["similarity"] >= 0.96

    speed_match = similar(server, ids["speed"])[original]
    assert speed_match["method"] == "frame_hashes" and speed_match["similarity"] >= 0.5
    assert speed_match["query_end"] >= 6 and speed_match["match_end"] >= 7  # 8 s of copy cover 10 s

    embedded = similar(server, ids["embedded"])[original]
    assert embedded["method"] == "frame_hashes" and embedded["match_share"] >= 0.5  # most of the clip
    assert embedded["query_share"] < 0.5  # a small part of the longer video
    assert embedded["query_start"] >= 3.5 and embedded["query_end"] <= 9.5  # bikes is at 4-9 s in it
    assert embedded["match_start"] <= 1 and embedded["match_end"] <= 5.5  # its first 5 s

    short = similar(server, ids["short"])[original]
    assert short["method"] == "frame_hashes" and max(short["query_share"], short["match_share"]) < 0.5
    assert short["query_start"] >= 3.5 and short["query_end"] <= 8.5 and short["match_end"] <= 4.5

    # Unrelated clips: carphone is not bikes, nor any copy of bikes but those that hold carphone.
    assert set(similar(server, unrelated)) <= {ids["embedded"], ids["short"]}
    for name in ("crop", "speed"):
        assert unrelated not in similar(server, ids[name]), name
    assert unrelated not in similar(server, original)
