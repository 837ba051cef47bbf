"""Chunk locks: one writer per (upload, chunk index) at a time.

``Locker`` is the interface; ``FileLocker`` (embedded default) uses ``flock`` on a small
lock file, which works between processes on one host and is released by the kernel when
a process dies, so a crash never leaves a chunk locked. A Redis locker for several hosts
is the planned distributed implementation.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from vidgate.errors import ChunkInProgress


class Locker(Protocol):
    def hold(self, upload_id: str, name: str) -> contextlib.AbstractContextManager[None]:
        """Hold the lock ``name`` of ``upload_id`` or raise :class:`ChunkInProgress` at once."""
        ...

    def release_all(self, upload_id: str) -> None:
        """Forget every lock file of a finished upload."""
        ...


class FileLocker:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def hold(self, upload_id: str, name: str) -> Iterator[None]:
        path = self.root / f"{upload_id}.{name}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise ChunkInProgress(
                    f"Another request is still writing {name} of this upload; retry when it ends."
                ) from exc
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def release_all(self, upload_id: str) -> None:
        for path in self.root.glob(f"{upload_id}.*.lock"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
