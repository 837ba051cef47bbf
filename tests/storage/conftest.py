from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.storage.swift import empty_and_delete, new_bucket_name, raw_client, start_swift


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
