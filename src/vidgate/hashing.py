"""Streaming SHA-256 helpers: files are hashed in blocks, never read whole."""

from __future__ import annotations

import hashlib
import os
import re
from typing import Protocol

BLOCK_SIZE = 1 << 20
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class Hasher(Protocol):
    """What the upload flow needs of a hash object (``hashlib``'s, or any with these methods)."""

    def update(self, data: bytes | memoryview, /) -> None: ...

    def digest(self) -> bytes: ...

    def hexdigest(self) -> str: ...

    def copy(self) -> Hasher: ...


def new_sha256() -> Hasher:
    return hashlib.sha256()


def normalise_sha256(value: str) -> str | None:
    """Accept ``<hex>`` or ``sha256:<hex>`` in any case; return lowercase hex, or None if invalid."""
    text = value.strip().lower()
    if text.startswith("sha256:"):
        text = text[len("sha256:") :]
    return text if _SHA256_HEX.match(text) else None


def update_from_fd(hasher: Hasher, fd: int, start: int, end: int) -> None:
    """Feed bytes ``[start, end)`` of an open file into ``hasher`` (hashlib releases the GIL)."""
    offset = start
    while offset < end:
        block = os.pread(fd, min(BLOCK_SIZE, end - offset), offset)
        if not block:
            raise OSError(f"file ended at {offset}, expected {end} bytes")
        hasher.update(block)
        offset += len(block)


def sha256_of_file(path: str | os.PathLike[str]) -> str:
    hasher = new_sha256()
    fd = os.open(path, os.O_RDONLY)
    try:
        update_from_fd(hasher, fd, 0, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    return str(hasher.hexdigest())
