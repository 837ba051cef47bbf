from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.storage.swift import empty_and_delete, new_bucket_name, raw_client, start_swift

MIB = 1 << 20


@pytest.fixture(scope="session")
def swift() -> str:
    """The S3 endpoint of the machine's Swift, started if it is not running."""
    return start_swift()


@pytest.fixture(scope="session")
def bucket(swift: str) -> Iterator[str]:
    """A bucket of this test session (each test keeps to a prefix of its own in it)."""
    name = new_bucket_name()
    raw_client(swift).create_bucket(Bucket=name)
    yield name
    empty_and_delete(name)


@pytest.fixture(scope="session")
def big_video(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real Matroska video of about 12 MiB (raw frames: made in a moment), so that chunks of
    5 MiB are parts. Upload it as ``clip.mkv``, ``video/x-matroska``."""
    import av
    import numpy as np

    path = tmp_path_factory.mktemp("big-video") / "big.mkv"
    width, height = 640, 480
    base = np.random.default_rng(7).integers(0, 255, (height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("rawvideo", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(28):
            frame = av.VideoFrame.from_ndarray(np.roll(base, index, axis=1), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = path.read_bytes()
    assert len(data) > 11 * MIB, len(data)
    return data
