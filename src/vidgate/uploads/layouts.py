"""How a session's received bytes map onto its file: the one thing the two protocols differ in.

The seed API places indexed chunks (any order, the last one may be short, a chunk that came
before chunk 0 told its size is staged apart and placed at assembly); tus appends at an offset,
so its part file already is the file and progress counts bytes. The shared steps (the view in
:mod:`vidgate.uploads.records`, assembly in :mod:`vidgate.uploads.completion`) ask the
session's :class:`Layout` instead of asking which protocol it is, as tusd's composer switches
optional features on per store instead of the handler testing for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from vidgate.db.models import UploadChunk, UploadSession


def progress_percent(done: int, total: int | None) -> float:
    """Progress in percent, two decimals; 0 while the total is unknown."""
    return round(100.0 * done / total, 2) if total else 0.0


@dataclass(frozen=True, slots=True)
class Assembly:
    """What assembly needs to know about a session's received data (read in one transaction)."""

    file_size: int
    #: ``(location, offset, size)`` of every chunk kept apart from the part file
    staged: list[tuple[str, int, int]] = field(default_factory=list)
    #: the file's SHA-256 when it is known without reading (one chunk, checked on arrival)
    known_hash: str | None = None
    #: why the data cannot be assembled (chunks missing), or None
    incomplete: str | None = None


class Layout(Protocol):
    def percentage(self, row: UploadSession, chunks_received: int) -> float:
        """Progress of an unfinished session, in percent."""
        ...

    def assembly(self, row: UploadSession, chunks: Sequence[UploadChunk], part_location: str) -> Assembly:
        """Where the file's bytes are (``chunks`` in index order; ``part_location``: where the
        part store keeps the part file, as chunk rows record it)."""
        ...


class IndexedChunks:
    """The seed API: ``total_chunks`` chunks of ``chunk_size`` bytes (the last may be short)."""

    def percentage(self, row: UploadSession, chunks_received: int) -> float:
        return progress_percent(chunks_received, row.total_chunks)

    def assembly(self, row: UploadSession, chunks: Sequence[UploadChunk], part_location: str) -> Assembly:
        file_size = sum(chunk.chunk_size for chunk in chunks)
        if len(chunks) != row.total_chunks:
            return Assembly(file_size, incomplete="Chunks are missing at assembly.")
        chunk_size = max(chunk.chunk_size for chunk in chunks)
        staged = [
            (chunk.storage_path, chunk.chunk_index * chunk_size, chunk.chunk_size)
            for chunk in chunks
            if chunk.storage_path != part_location
        ]
        known_hash = chunks[0].chunk_hash if len(chunks) == 1 else None
        return Assembly(file_size, staged, known_hash)


class AppendedBytes:
    """tus: bytes appended at the upload's offset, one chunk row per PATCH; nothing is staged."""

    def percentage(self, row: UploadSession, chunks_received: int) -> float:
        return progress_percent(row.bytes_received, row.file_size)

    def assembly(self, row: UploadSession, chunks: Sequence[UploadChunk], part_location: str) -> Assembly:
        return Assembly(row.file_size or 0)


LAYOUTS: dict[str, Layout] = {"chunks": IndexedChunks(), "tus": AppendedBytes()}


def layout_of(row: UploadSession) -> Layout:
    """The layout of a session's data, by the protocol it was created with."""
    return LAYOUTS[row.protocol]
