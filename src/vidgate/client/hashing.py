"""The file's SHA-256, computed from the bytes as they are read for sending.

Chunks may go out of order (parallel workers, a resume that skips what the server has), but
SHA-256 must see the file in order. :class:`StreamingHash` keeps a frontier: a block read at
the frontier is hashed on the spot; anything else is read again from disk later (one
sequential pass, by a background thread when chunks go out in parallel). A plain sequential
upload therefore reads every byte exactly once.
"""

from __future__ import annotations

import hashlib
import os
import threading

from vidgate.client.errors import FileChanged

BLOCK_SIZE = 1 << 20


class StreamingHash:
    """SHA-256 of the first ``size`` bytes of the open file ``fd``, fed in any order."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self._size = size
        self._lock = threading.Lock()
        self._sha = hashlib.sha256()
        self._frontier = 0
        self._digest: str | None = None

    @property
    def frontier(self) -> int:
        """Bytes hashed so far (always a prefix of the file)."""
        return self._frontier

    def feed(self, offset: int, data: bytes | memoryview) -> None:
        """Hash ``data`` read at ``offset`` if it reaches past the frontier without a gap."""
        end = offset + len(data)
        with self._lock:
            if offset <= self._frontier < end:
                self._sha.update(data[self._frontier - offset :])  # hashlib releases the GIL
                self._frontier = end

    def catch_up(self, until: int | None = None, stop: threading.Event | None = None) -> None:
        """Read and hash from the frontier to ``until`` (default: the end of the file)."""
        until = self._size if until is None else min(until, self._size)
        while (start := self._frontier) < until:
            if stop is not None and stop.is_set():
                return
            block = os.pread(self._fd, min(BLOCK_SIZE, until - start), start)
            if not block:
                raise FileChanged(f"the file ended at byte {start}, but it had {self._size} bytes")
            self.feed(start, block)

    def hexdigest(self) -> str:
        """The whole file's SHA-256 (reads whatever was not hashed yet)."""
        if self._digest is None:
            self.catch_up()
            with self._lock:
                self._digest = self._sha.hexdigest()
        return self._digest


class BackgroundHash:
    """Runs :meth:`StreamingHash.catch_up` in a thread while chunks go out in parallel."""

    def __init__(self, hasher: StreamingHash) -> None:
        self._hasher = hasher
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="vidgate-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._hasher.catch_up(stop=self._stop)
        except BaseException as exc:  # handed to the caller in join()
            self._error = exc

    def join(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
