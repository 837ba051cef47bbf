"""The seed chunked upload without HTTP: where each chunk goes (write modes) and the running hash."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import sha256, split
from vidgate.auth import Principal
from vidgate.db.models import SessionStatus
from vidgate.errors import ChunkInProgress
from vidgate.uploads.chunked import ChunkedUploads
from vidgate.uploads.models import ChunkReceipt, ChunkRequest
from vidgate.uploads.writing import WriteMode

CHUNK = 64 * 1024
ALICE = Principal(user_id="u-alice", username="alice")


def send(service: ChunkedUploads, data: bytes, **fields: Any) -> ChunkReceipt:
    """Drive one chunk through begin -> stream -> finish, as the API does."""
    plan = service.begin_chunk(ALICE, ChunkRequest(filename="clip.mp4", **fields))

    async def stream() -> Any:
        sink = service.open_sink(plan)
        for piece in split(data, 10_000):
            await sink.write(piece)
        return await sink.finish()

    return service.finish_chunk(plan, asyncio.run(stream()))


def test_write_modes(services_for: Callable[..., Any], video_file: Path) -> None:
    data = video_file.read_bytes()
    chunks = split(data, CHUNK)
    total = len(chunks)
    with services_for() as services:
        uploads: ChunkedUploads = services.uploads
        common = {"session_id": "modes", "total_chunks": total}
        # Chunk size unknown: a later chunk waits in staging...
        plan = uploads.begin_chunk(ALICE, ChunkRequest(filename="clip.mp4", chunk_index=2, **common))
        assert plan.mode is WriteMode.STAGED
        uploads.abort_chunk(plan)
        # ...and chunk 0 goes straight into the part file and teaches the chunk size.
        send(uploads, chunks[0], chunk_index=0, **common)
        plan = uploads.begin_chunk(ALICE, ChunkRequest(filename="clip.mp4", chunk_index=2, **common))
        assert (plan.mode, plan.offset) == (WriteMode.DIRECT, 2 * CHUNK)
        # The same index twice at once: the second is refused while the first holds the lock.
        with pytest.raises(ChunkInProgress):
            uploads.begin_chunk(ALICE, ChunkRequest(filename="clip.mp4", chunk_index=2, **common))
        uploads.abort_chunk(plan)
        # An index already received is only verified.
        plan = uploads.begin_chunk(ALICE, ChunkRequest(filename="clip.mp4", chunk_index=0, **common))
        assert plan.mode is WriteMode.VERIFY
        uploads.abort_chunk(plan)
        for index in range(1, total):
            receipt = send(uploads, chunks[index], chunk_index=index, **common)
        assert receipt.status is SessionStatus.COMPLETED
        assert receipt.content_hash == sha256(data)


def test_in_order_chunks_need_no_second_read(services_for: Callable[..., Any], video_file: Path) -> None:
    data = video_file.read_bytes()
    chunks = split(data, CHUNK)
    with services_for() as services:
        uploads: ChunkedUploads = services.uploads
        for index, chunk in enumerate(chunks[:-1]):
            send(uploads, chunk, session_id="frontier", chunk_index=index, total_chunks=len(chunks))
        plan = uploads.begin_chunk(
            ALICE, ChunkRequest(filename="clip.mp4", session_id="frontier", chunk_index=0, total_chunks=len(chunks))
        )
        uploads.abort_chunk(plan)
        hasher, upto = uploads.frontier.take(plan.row_id)
        assert upto == len(data) - len(chunks[-1])
        assert hasher.hexdigest() == sha256(data[:upto])
