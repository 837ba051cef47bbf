from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.media import make_video
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
    """A real MP4 of over 11 MiB (noise frames barely compress), so that chunks of 5 MiB are parts."""
    path = make_video(tmp_path_factory.mktemp("big-video") / "big.mp4", frames=36, width=640, height=480)
    data = path.read_bytes()
    assert len(data) > 11 * MIB, len(data)
    return data
