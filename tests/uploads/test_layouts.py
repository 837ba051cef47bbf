"""The two layouts of received data: indexed chunks (seed API) and appended bytes (tus)."""

from __future__ import annotations

from vidgate.db.models import UploadChunk, UploadSession
from vidgate.uploads.layouts import AppendedBytes, IndexedChunks, layout_of, progress_percent

PART = "/data/parts/row-1"


def session(protocol: str, **fields: object) -> UploadSession:
    return UploadSession(protocol=protocol, **fields)


def chunk(index: int, size: int, path: str = PART, chunk_hash: str | None = None) -> UploadChunk:
    return UploadChunk(chunk_index=index, chunk_size=size, storage_path=path, chunk_hash=chunk_hash)


def test_each_protocol_has_its_layout() -> None:
    assert isinstance(layout_of(session("chunks")), IndexedChunks)
    assert isinstance(layout_of(session("tus")), AppendedBytes)


def test_progress_percent_rounds_and_is_zero_without_a_total() -> None:
    assert progress_percent(1, 3) == 33.33
    assert progress_percent(5, None) == 0.0
    assert progress_percent(5, 0) == 0.0


def test_indexed_chunks_count_chunks_and_appended_bytes_count_bytes() -> None:
    seed = session("chunks", total_chunks=4, bytes_received=900, file_size=1000)
    tus = session("tus", total_chunks=4, bytes_received=900, file_size=1000)
    assert IndexedChunks().percentage(seed, 1) == 25.0
    assert AppendedBytes().percentage(tus, 1) == 90.0
    assert AppendedBytes().percentage(session("tus", bytes_received=10, file_size=None), 1) == 0.0


def test_indexed_chunks_stage_only_what_is_not_in_the_part_file() -> None:
    row = session("chunks", total_chunks=3)
    chunks = [chunk(0, 10), chunk(1, 10, "/data/staged/row-1.1"), chunk(2, 4)]
    assembly = IndexedChunks().assembly(row, chunks, PART)
    assert assembly.incomplete is None
    assert assembly.file_size == 24
    assert assembly.staged == [("/data/staged/row-1.1", 10, 10)]
    assert assembly.known_hash is None


def test_indexed_chunks_with_a_chunk_missing_are_incomplete() -> None:
    assembly = IndexedChunks().assembly(session("chunks", total_chunks=3), [chunk(0, 10), chunk(2, 4)], PART)
    assert assembly.incomplete == "Chunks are missing at assembly."
    assert assembly.file_size == 14  # what did arrive (the answer when the blob is already stored)


def test_one_chunk_carries_the_file_hash() -> None:
    assembly = IndexedChunks().assembly(session("chunks", total_chunks=1), [chunk(0, 7, chunk_hash="ab" * 32)], PART)
    assert assembly.known_hash == "ab" * 32


def test_appended_bytes_are_the_file_as_they_are() -> None:
    row = session("tus", file_size=1234, total_chunks=5)
    assembly = AppendedBytes().assembly(row, [chunk(0, 600), chunk(1, 634)], PART)
    assert (assembly.file_size, assembly.staged, assembly.known_hash, assembly.incomplete) == (1234, [], None, None)
