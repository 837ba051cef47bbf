"""Write a byte stream at an offset of a part while hashing it, off the event loop.

The event loop keeps parsing HTTP while worker threads handle the previous blocks, one per
hash (a seed chunk has two: its own SHA-256 and the running file hash) and one writing:
``hashlib`` and ``os.pwritev`` both release the GIL, so parsing, hashing and the kernel's copy
into the page cache overlap. A block is the list of pieces the server received (never joined:
``pwritev`` writes them, ``WRITE_SIZE`` bytes per call, and each is hashed in place, so no byte
is copied in user space). The bytes go to a :class:`~vidgate.storage.parts.PartWriter`, so the
sink does not know where a part lives. At most ``MAX_PENDING`` blocks wait for the threads,
which bounds the memory one upload holds (``BLOCK_SIZE * (MAX_PENDING + 1)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from vidgate.errors import VidgateError
from vidgate.hashing import Hasher, new_sha256
from vidgate.storage.parts import PartWriter

BLOCK_SIZE = 1 << 20
MAX_PENDING = 4
MAX_PIECES = 64  # more (tiny) pieces than this are joined: cheap, and far below IOV_MAX
# Bytes per write call. Larger writes make the kernel (6.x ext4) put them into large page-cache
# folios, and allocating those cost ~10x more CPU on this VM once it had taken freed memory
# back: 256 MiB written in 1 MiB calls 0.47 s of CPU after 2 s idle (0.04 s right after a delete),
# in 256 KiB calls 0.04 s either way; 512 KiB calls already cost 0.08 s.
WRITE_SIZE = 256 << 10


class _Lanes:
    """Single-thread executors kept from one sink to the next. A sink takes one per hash and one
    for its writes (each runs that sink's blocks in order) and gives them back when done:
    starting threads per request cost a thread start per hash and write on the event loop
    (``Thread.start`` waits until the new thread runs, which on a busy machine is not at once),
    for every seed chunk and tus PATCH. A lane that still has work queued (a sink that failed
    half-way) is not given back but left to finish and end, as before."""

    def __init__(self, keep: int = 32) -> None:
        self._keep = keep
        self._idle: list[ThreadPoolExecutor] = []
        self._lock = threading.Lock()

    def take(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="chunk-lane")

    def give_back(self, lane: ThreadPoolExecutor, last: Future[None] | None) -> None:
        if last is None or last.done():
            with self._lock:
                if len(self._idle) < self._keep:
                    self._idle.append(lane)
                    return
        lane.shutdown(wait=False)


_LANES = _Lanes()


@dataclass(frozen=True)
class SinkResult:
    size: int
    sha256: str | None  # of the streamed bytes; None when the sink was told not to hash them


class ChunkSink:
    """Streams bytes to ``target`` at ``offset`` (or only hashes them when ``target`` is None).

    ``limit`` is the most bytes accepted: one more raises ``too_large`` (built by the caller)
    before anything past the limit is written. ``extra_hashers`` also receive the bytes (the
    running whole-file hash while chunks arrive in order, a tus Upload-Checksum). ``hash_body=False`` skips the
    stream's own SHA-256 when nothing needs it (a tus PATCH: the running file hash covers its
    bytes), so each byte is hashed once. ``head_check`` sees the first ``head_bytes`` before
    any byte is written, and may refuse the stream by raising. ``trailing_hasher`` is fed like
    the others, but :meth:`finish` does not wait for it (only for the writes and the other
    hashes): the running file hash, which no answer needs, finishes after it; :attr:`trailing`
    is its last block, which the next user of that hasher waits for.
    """

    def __init__(
        self,
        target: PartWriter | None,
        offset: int,
        limit: int,
        too_large: VidgateError,
        *,
        extra_hashers: Iterable[Hasher | None] = (),
        hash_body: bool = True,
        fsync: bool = False,
        head_check: Callable[[bytes], object] | None = None,
        head_bytes: int = 4096,
        trailing_hasher: Hasher | None = None,
    ) -> None:
        self._target = target
        self._offset = offset
        self._limit = limit
        self._too_large = too_large
        self._fsync = fsync
        self._head_check = head_check
        self._head_bytes = head_bytes
        self._hasher = new_sha256() if hash_body else None
        self._hashers = [h for h in (self._hasher, *extra_hashers) if h is not None]
        self._size = 0
        self._buffer: list[bytes] = []
        self._buffered = 0
        # each entry: a block's futures that finish() waits for, and its trailing hash's
        self._pending: deque[tuple[list[Future[None]], Future[None] | None]] = deque()
        # one lane per hash: a chunk's own hash and the file's running hash proceed side by side
        self._hash_threads = [(hasher, _LANES.take()) for hasher in self._hashers]
        self._write_thread = _LANES.take() if target is not None else None
        self._trailing = (trailing_hasher, _LANES.take()) if trailing_hasher is not None else None
        self._last: dict[ThreadPoolExecutor, Future[None]] = {}  # each lane's latest block
        #: the trailing hash's last block (done when the trailing hasher has seen every byte)
        self.trailing: Future[None] | None = None
        self._closed = False

    @property
    def size(self) -> int:
        return self._size

    @staticmethod
    def _hash_block(hasher: Hasher, pieces: list[bytes]) -> None:
        for piece in pieces:
            hasher.update(piece)

    def _write_block(self, pieces: list[bytes], position: int) -> None:
        """Write the block in calls of at most ``WRITE_SIZE`` bytes (see there)."""
        views = [memoryview(piece) for piece in pieces]
        while views:
            batch: list[memoryview] = []
            size = 0
            while views and size < WRITE_SIZE:
                room = WRITE_SIZE - size
                if len(views[0]) > room:
                    batch.append(views[0][:room])
                    views[0] = views[0][room:]
                else:
                    batch.append(views.pop(0))
                size += len(batch[-1])
            self._write_all(batch, position)
            position += size

    def _write_all(self, views: list[memoryview], position: int) -> None:
        assert self._target is not None
        while views:
            written = self._target.write_at(views, position)
            position += written
            while views and written >= len(views[0]):  # a short write: go on from where it stopped
                written -= len(views[0])
                views.pop(0)
            if views:
                views[0] = views[0][written:]

    async def write(self, data: bytes) -> None:
        if not data:
            return
        if self._size + self._buffered + len(data) > self._limit:
            raise self._too_large
        self._buffer.append(data)
        self._buffered += len(data)
        if self._head_check is not None and self._buffered >= self._head_bytes:
            self._run_head_check()
        if self._buffered >= BLOCK_SIZE:
            await self._submit()

    def _run_head_check(self) -> None:
        check, self._head_check = self._head_check, None
        if check is not None:
            check(b"".join(self._buffer)[: self._head_bytes])

    async def _submit(self) -> None:
        if not self._buffer:
            return
        pieces = self._buffer if len(self._buffer) <= MAX_PIECES else [b"".join(self._buffer)]
        self._buffer = []
        position = self._offset + self._size
        self._size += self._buffered
        self._buffered = 0
        work = []
        for hasher, lane in self._hash_threads:
            work.append(future := lane.submit(self._hash_block, hasher, pieces))
            self._last[lane] = future
        if self._write_thread is not None:
            work.append(future := self._write_thread.submit(self._write_block, pieces, position))
            self._last[self._write_thread] = future
        if self._trailing is not None:
            hasher, lane = self._trailing
            self.trailing = lane.submit(self._hash_block, hasher, pieces)
        self._pending.append((work, self.trailing))
        while len(self._pending) > MAX_PENDING:  # the trailing hash counts here: memory stays bounded
            await self._wait_oldest()

    async def _wait_oldest(self, *, trailing: bool = True) -> None:
        work, trailer = self._pending.popleft()
        for future in work:
            await asyncio.wrap_future(future)
        if trailing and trailer is not None:
            await asyncio.wrap_future(trailer)

    def _shutdown(self) -> None:
        """Give the lanes back (once: a finish that failed may be followed by an abort)."""
        if self._closed:
            return
        self._closed = True
        lanes = [lane for _, lane in self._hash_threads]
        if self._write_thread is not None:
            lanes.append(self._write_thread)
        for lane in lanes:
            _LANES.give_back(lane, self._last.get(lane))
        if self._trailing is not None:  # only hashing is queued there: reusable as it is, in order
            _LANES.give_back(self._trailing[1], None)

    async def finish(self) -> SinkResult:
        """Flush, wait for the threads, and return the size and SHA-256 of what was streamed."""
        try:
            if self._buffered:  # an empty stream is refused as empty by the caller, not as unknown
                self._run_head_check()
            await self._submit()
            if self._write_thread is not None and self._target is not None:  # the store takes the bytes
                flushed = self._write_thread.submit(self._target.flush)  # (S3: the last part)
                self._last[self._write_thread] = flushed
                self._pending.append(([flushed], None))
            while self._pending:  # not the trailing hash: it may go on after the answer
                await self._wait_oldest(trailing=False)
            if self._fsync and self._target is not None:
                await asyncio.to_thread(self._target.sync)
        finally:
            self._shutdown()
        return SinkResult(size=self._size, sha256=self._hasher.hexdigest() if self._hasher is not None else None)

    async def keep_written(self) -> SinkResult | None:
        """The stream broke off: write what is buffered, wait for the threads and report what
        is on disk (None when a write failed, so none of it can be trusted). The first-bytes
        check is skipped: a short head proves nothing, and the whole file is validated anyway."""
        self._head_check = None
        try:
            return await self.finish()
        except Exception:
            await self.abort()
            return None

    async def abort(self) -> None:
        """Stop: wait for blocks already handed to the thread (they may still write) and drop the rest."""
        self._buffer.clear()
        while self._pending:
            work, trailer = self._pending.popleft()
            for future in [*work, *([trailer] if trailer is not None else [])]:
                with contextlib.suppress(Exception):
                    await asyncio.wrap_future(future)
        self._shutdown()
