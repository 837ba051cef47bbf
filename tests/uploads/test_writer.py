"""ChunkSink: pieces land at their offsets unjoined, hashed once when asked to be."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from pathlib import Path

import pytest

from vidgate.errors import FileTooLarge
from vidgate.storage import PartFile
from vidgate.uploads import writer
from vidgate.uploads.writer import ChunkSink


def _stream(sink: ChunkSink, pieces: list[bytes]) -> writer.SinkResult:
    async def run() -> writer.SinkResult:
        for piece in pieces:
            await sink.write(piece)
        return await sink.finish()

    return asyncio.run(run())


def _stream_into_file(path: Path, pieces: list[bytes]) -> writer.SinkResult:
    """Stream ``pieces`` into a new file at ``path`` and check every byte landed in order."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        result = _stream(ChunkSink(PartFile(fd), 0, 10 << 20, FileTooLarge("x")), pieces)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"".join(pieces)
    return result


def _pieces(total: int, size: int) -> list[bytes]:
    data = os.urandom(total)
    return [data[i : i + size] for i in range(0, total, size)]


def test_pieces_land_at_the_offset_and_every_hasher_sees_them(tmp_path: Path) -> None:
    pieces = _pieces(3 * writer.BLOCK_SIZE + 12345, 65536 + 7)
    body = b"".join(pieces)
    path = tmp_path / "part"
    path.write_bytes(b"\xee" * 100)
    running = hashlib.sha256(b"\xee" * 100)
    fd = os.open(path, os.O_RDWR)
    try:
        result = _stream(
            ChunkSink(PartFile(fd), 100, len(body), FileTooLarge("too large"), extra_hashers=[running]), pieces
        )
    finally:
        os.close(fd)
    assert result.size == len(body)
    assert result.sha256 == hashlib.sha256(body).hexdigest()
    assert path.read_bytes() == b"\xee" * 100 + body
    assert running.hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()


def test_each_hash_runs_in_its_own_thread_beside_the_others(tmp_path: Path) -> None:
    """A seed chunk is hashed twice (its own SHA-256 and the file's running hash): on one
    thread the second hash would trail the stream by a whole chunk's worth of hashing."""

    class ThreadRecordingHasher:
        def __init__(self) -> None:
            self.inner = hashlib.sha256()
            self.threads: set[int] = set()

        def update(self, data: bytes) -> None:
            self.threads.add(threading.get_ident())
            self.inner.update(data)

    first, second = ThreadRecordingHasher(), ThreadRecordingHasher()
    pieces = _pieces(3 * writer.BLOCK_SIZE, 100_000)
    fd = os.open(tmp_path / "part", os.O_RDWR | os.O_CREAT)
    try:
        sink = ChunkSink(
            PartFile(fd), 0, 3 * writer.BLOCK_SIZE, FileTooLarge("too large"), extra_hashers=[first, second]
        )
        result = _stream(sink, pieces)
    finally:
        os.close(fd)
    digest = hashlib.sha256(b"".join(pieces)).hexdigest()
    assert result.sha256 == first.inner.hexdigest() == second.inner.hexdigest() == digest
    assert len(first.threads) == len(second.threads) == 1
    assert first.threads.isdisjoint(second.threads)
    assert threading.get_ident() not in first.threads | second.threads  # never on the event loop


def test_without_its_own_hash_the_body_is_hashed_once(tmp_path: Path) -> None:
    class CountingHasher:
        def __init__(self) -> None:
            self.inner = hashlib.sha256()
            self.bytes = 0

        def update(self, data: bytes) -> None:
            self.inner.update(data)
            self.bytes += len(data)

    pieces = _pieces(2 * writer.BLOCK_SIZE + 99, 200_000)
    counting = CountingHasher()
    fd = os.open(tmp_path / "part", os.O_RDWR | os.O_CREAT)
    try:
        sink = ChunkSink(PartFile(fd), 0, 10 << 20, FileTooLarge("x"), extra_hashers=[counting], hash_body=False)
        result = _stream(sink, pieces)
    finally:
        os.close(fd)
    assert result.sha256 is None
    assert counting.bytes == result.size == sum(map(len, pieces))
    assert counting.inner.hexdigest() == hashlib.sha256(b"".join(pieces)).hexdigest()


def test_many_tiny_pieces_and_short_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """More pieces than MAX_PIECES per block are joined; a short pwritev goes on where it stopped
    (the kernel may write less than asked, e.g. on a signal or near a quota)."""
    real_pwritev = os.pwritev
    calls = []

    def short_pwritev(fd: int, buffers: list[memoryview], offset: int) -> int:
        calls.append(len(buffers))
        first = bytes(buffers[0])
        return real_pwritev(fd, [first[: max(1, len(first) // 3)]], offset)

    monkeypatch.setattr(os, "pwritev", short_pwritev)
    pieces = _pieces(writer.BLOCK_SIZE + 5000, 1000)
    result = _stream_into_file(tmp_path / "part", pieces)
    assert result.sha256 == hashlib.sha256(b"".join(pieces)).hexdigest()
    assert max(calls) <= writer.MAX_PIECES


def test_no_write_call_is_larger_than_write_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pieces larger than WRITE_SIZE are split and small ones grouped up to it: larger write
    calls make the kernel allocate large page-cache folios, ~10x dearer on this VM."""
    real_pwritev = os.pwritev
    sizes: list[int] = []

    def recording_pwritev(fd: int, buffers: list[memoryview], offset: int) -> int:
        sizes.append(sum(len(buffer) for buffer in buffers))
        return real_pwritev(fd, buffers, offset)

    monkeypatch.setattr(os, "pwritev", recording_pwritev)
    pieces = _pieces(3 * writer.BLOCK_SIZE + 777, 700_001) + _pieces(writer.BLOCK_SIZE, 30_000)
    result = _stream_into_file(tmp_path / "part", pieces)
    assert result.size == sum(sizes) == sum(map(len, pieces))
    assert max(sizes) == writer.WRITE_SIZE  # big pieces split, small ones grouped up to it


def test_one_byte_past_the_limit_is_refused_before_it_is_written(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "part", os.O_RDWR | os.O_CREAT)
    try:
        with pytest.raises(FileTooLarge):
            _stream(ChunkSink(PartFile(fd), 0, 10, FileTooLarge("past the limit")), [b"12345", b"678901"])
    finally:
        os.close(fd)
    assert (tmp_path / "part").read_bytes() == b""


def test_the_answer_does_not_wait_for_the_trailing_hash(tmp_path: Path) -> None:
    """A tus PATCH's running file hash: finish() returns once every byte is written, while the
    trailing hash may still run; its last block (``trailing``) tells when it has seen them all."""

    class HeldHasher:
        def __init__(self) -> None:
            self.inner = hashlib.sha256()
            self.release = threading.Event()

        def update(self, data: bytes) -> None:
            assert self.release.wait(30)
            self.inner.update(data)

    held = HeldHasher()
    pieces = _pieces(writer.BLOCK_SIZE + 4321, 50_000)
    path = tmp_path / "part"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        sink = ChunkSink(PartFile(fd), 0, 10 << 20, FileTooLarge("x"), hash_body=False, trailing_hasher=held)
        result = _stream(sink, pieces)  # returns although the trailing hasher has seen nothing yet
        assert path.read_bytes() == b"".join(pieces)  # every byte written before the answer
        assert sink.trailing is not None and not sink.trailing.done()
        held.release.set()
        sink.trailing.result(timeout=30)
    finally:
        os.close(fd)
    assert result.size == sum(map(len, pieces)) and result.sha256 is None
    assert held.inner.hexdigest() == hashlib.sha256(b"".join(pieces)).hexdigest()


def test_lanes_are_reused_from_one_sink_to_the_next(tmp_path: Path) -> None:
    """No thread is started per request once lanes exist (a thread start waits on the event loop)."""
    threads: list[threading.Thread] = []  # kept alive, so no two are ever the same object

    class NamingHasher:
        def __init__(self) -> None:
            self.inner = hashlib.sha256()

        def update(self, data: bytes) -> None:
            threads.append(threading.current_thread())
            self.inner.update(data)

    for round_ in range(6):
        path = tmp_path / f"part{round_}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT)
        try:
            _stream(
                ChunkSink(PartFile(fd), 0, 10 << 20, FileTooLarge("x"), extra_hashers=[NamingHasher()]),
                _pieces(writer.BLOCK_SIZE // 2, 40_000),
            )
        finally:
            os.close(fd)
    assert 1 <= len(set(threads)) <= 2  # one sink at a time takes the same few lanes again
