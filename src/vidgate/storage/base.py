"""The storage interface the upload flow depends on."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Protocol


class BlobStore(Protocol):
    """Finished files, addressed by their SHA-256 (so each content is stored once)."""

    def put_file(self, content_hash: str, source: Path) -> str:
        """Move ``source`` in as ``content_hash`` and return its key. If the content is already
        stored, ``source`` is removed and the existing key returned."""
        ...

    def exists(self, content_hash: str) -> bool: ...

    def open(self, key: str) -> BinaryIO: ...

    def size(self, key: str) -> int: ...

    def delete(self, key: str) -> None: ...

    def check(self) -> None:
        """Raise if the store cannot be written (used by readiness checks)."""
        ...
