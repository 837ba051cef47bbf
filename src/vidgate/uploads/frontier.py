"""The running whole-file SHA-256 of an upload, kept as close to its received bytes as possible.

While chunks arrive in order the file hash is computed as the bytes stream in, so the
completed file needs no second read. Chunks that arrive ahead of the frontier (parallel
chunk uploads) are hashed from the part file once the gap before them is filled: a
background catch-up (:meth:`HashFrontier.catch_up`) reads them from the page cache while
other chunks are still arriving, instead of at assembly. After a restart (the state lives
in this process only) assembly hashes whatever the frontier did not reach.

The frontier only ever covers bytes ``[0, upto)`` that were hashed in order; a claim (an
in-order chunk streaming, or a catch-up reading) excludes other claims, and a failed claim
restores the hasher as it was.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from vidgate.errors import VidgateError
from vidgate.hashing import Hasher, new_sha256

TAKE_WAIT_SECONDS = 60.0  # assembly waits this long at most for a running catch-up


@dataclass
class _State:
    hasher: Hasher
    upto: int
    saved: Hasher | None = None  # copy taken when a claim began, restored if it fails
    stored: dict[int, int] = field(default_factory=dict)  # offset -> size of chunks on disk past upto
    idle: threading.Event = field(default_factory=threading.Event)  # no catch-up running
    #: the hasher's last block still being hashed after its claim was committed (a tus PATCH
    #: answers before its running hash is done: ChunkSink's trailing hasher); None when settled
    hashing: Future[None] | None = None

    def __post_init__(self) -> None:
        self.idle.set()


class HashFrontier:
    def __init__(self, max_entries: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._states: OrderedDict[str, _State] = OrderedDict()
        self._max = max_entries

    def _state(self, row_id: str, offset: int) -> _State | None:
        """The state of ``row_id``; a new one at 0 when a chunk at offset 0 starts it."""
        state = self._states.get(row_id)
        if state is None and offset == 0:
            state = self._states[row_id] = _State(new_sha256(), 0)
            while len(self._states) > self._max:
                self._states.popitem(last=False)
        return state

    def claim(self, row_id: str, offset: int) -> Hasher | None:
        """The hasher to feed a chunk starting at ``offset``, if that chunk extends the frontier.
        Waits (a bounded time) until the previous claim's bytes are hashed."""
        with self._lock:
            state = self._state(row_id, offset)
            if state is None or state.upto != offset or state.saved is not None:
                return None
        if not self._settle(row_id, state):
            return None
        with self._lock:
            if self._states.get(row_id) is not state or state.upto != offset or state.saved is not None:
                return None
            state.saved = state.hasher.copy()
            return state.hasher

    def commit(self, row_id: str, size: int, hashing: Future[None] | None = None) -> None:
        """The claim's ``size`` bytes are on record; ``hashing``: the hasher's last block, if it is
        still being hashed (the next claim, a catch-up and :meth:`take` wait for it)."""
        with self._lock:
            state = self._states.get(row_id)
            if state is not None and state.saved is not None:
                state.upto += size
                state.saved = None
                state.hashing = hashing
                _forget_covered(state)

    def _settle(self, row_id: str, state: _State) -> bool:
        """Wait for the hashing a committed claim left running; False (and the state dropped: the
        file is then hashed from the part at assembly) if it does not end in time or failed."""
        hashing = state.hashing
        if hashing is None:
            return True
        try:
            hashing.result(timeout=TAKE_WAIT_SECONDS)
        except Exception:  # a timeout or a failed update: this hasher cannot be trusted
            with self._lock:
                if self._states.get(row_id) is state:
                    del self._states[row_id]
            return False
        with self._lock:
            if state.hashing is hashing:
                state.hashing = None
        return True

    def rollback(self, row_id: str) -> None:
        with self._lock:
            state = self._states.get(row_id)
            if state is not None and state.saved is not None:
                state.hasher, state.saved = state.saved, None

    def stored(self, row_id: str, offset: int, size: int) -> bool:
        """A chunk of ``size`` bytes is final on disk at ``offset`` of the part file. True when
        the frontier could now move on by reading from disk (call :meth:`catch_up`)."""
        with self._lock:
            state = self._state(row_id, 0)  # found, or started at 0 (chunk 0 may come later)
            assert state is not None
            if offset + size > state.upto:
                state.stored[offset] = size
            _forget_covered(state)
            return state.saved is None and state.upto in state.stored

    def catch_up(self, row_id: str, read: Callable[[Hasher, int, int], None]) -> None:
        """Hash the stored chunks that now follow the frontier without a gap, fed by
        ``read(hasher, start, end)`` (the part store's ``hash_range``; run in a background
        thread; one at a time per upload, never beside a streaming claim)."""
        while True:
            with self._lock:
                state = self._states.get(row_id)
                if state is None or state.saved is not None or not state.idle.is_set():
                    return
            if not self._settle(row_id, state):
                return
            with self._lock:
                if self._states.get(row_id) is not state or state.saved is not None or not state.idle.is_set():
                    return
                start = end = state.upto
                while end in state.stored:
                    end += state.stored[end]
                if end == start:
                    return
                state.saved = state.hasher.copy()
                state.idle.clear()
                hasher = state.hasher
            try:
                read(hasher, start, end)
            except VidgateError:  # the upload was cancelled or completed meanwhile: nothing to keep
                with self._lock:
                    state.hasher, state.saved = state.saved, None
                    state.idle.set()
                return
            with self._lock:
                state.upto, state.saved = end, None
                _forget_covered(state)
                state.idle.set()

    def take(self, row_id: str) -> tuple[Hasher, int]:
        """Remove and return ``(hasher, bytes hashed)``; a fresh hasher at 0 when unknown. Waits
        (a bounded time) for a catch-up that is running, rather than hashing its bytes again."""
        deadline = time.monotonic() + TAKE_WAIT_SECONDS
        while True:
            with self._lock:
                state = self._states.get(row_id)
                if state is None or state.idle.is_set() or time.monotonic() >= deadline:
                    self._states.pop(row_id, None)
                    break
            state.idle.wait(max(0.0, deadline - time.monotonic()))
        if state is None or state.saved is not None or not self._settle(row_id, state):
            return new_sha256(), 0
        return state.hasher, state.upto

    def drop(self, row_id: str) -> None:
        with self._lock:
            self._states.pop(row_id, None)


def _forget_covered(state: _State) -> None:
    for offset in [o for o, size in state.stored.items() if o + size <= state.upto]:
        del state.stored[offset]
