"""The running whole-file SHA-256 of uploads whose chunks arrive in order.

While chunks arrive in order the file hash is computed as the bytes stream in, so the
completed file needs no second read. When a chunk arrives out of order (or after a
restart, since the state lives in this process only) assembly hashes the rest from disk.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from vidgate.hashing import new_sha256


@dataclass
class _State:
    hasher: Any
    upto: int
    saved: Any | None = None  # copy taken when a chunk claimed the hasher, restored on failure


class HashFrontier:
    def __init__(self, max_entries: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._states: OrderedDict[str, _State] = OrderedDict()
        self._max = max_entries

    def claim(self, upload_id: str, offset: int) -> Any | None:
        """The hasher to feed a chunk starting at ``offset``, if that chunk extends the frontier."""
        with self._lock:
            state = self._states.get(upload_id)
            if state is None and offset == 0:
                state = self._states[upload_id] = _State(new_sha256(), 0)
                while len(self._states) > self._max:
                    self._states.popitem(last=False)
            if state is None or state.upto != offset or state.saved is not None:
                return None
            state.saved = state.hasher.copy()
            return state.hasher

    def commit(self, upload_id: str, size: int) -> None:
        with self._lock:
            state = self._states.get(upload_id)
            if state is not None and state.saved is not None:
                state.upto += size
                state.saved = None

    def rollback(self, upload_id: str) -> None:
        with self._lock:
            state = self._states.get(upload_id)
            if state is not None and state.saved is not None:
                state.hasher, state.saved = state.saved, None

    def take(self, upload_id: str) -> tuple[Any, int]:
        """Remove and return ``(hasher, bytes hashed)``; a fresh hasher at 0 when unknown."""
        with self._lock:
            state = self._states.pop(upload_id, None)
        if state is None or state.saved is not None:
            return new_sha256(), 0
        return state.hasher, state.upto

    def drop(self, upload_id: str) -> None:
        with self._lock:
            self._states.pop(upload_id, None)
