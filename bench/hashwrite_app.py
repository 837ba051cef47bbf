"""The ceiling of any server that keeps and hashes what it receives, on our stack: the bare
baseline app (FastAPI under the same uvicorn, httptools + uvloop), plus SHA-256 of every
byte and a write of every byte to a file, each in its own worker thread so that parsing,
hashing and writing overlap on the cores (the same overlap vidgate's writer uses, written
out plainly here with nothing else: no multipart parsing, no database, no validation)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from fastapi import FastAPI, Request

# vidgate's writer's block size, blocks in flight and bytes per write call, so that the ceiling
# moves with them (WRITE_SIZE says why writes are cut)
from vidgate.uploads.writer import BLOCK_SIZE, MAX_PENDING, WRITE_SIZE

FILES = Path(os.environ.get("PEER_FILES_DIR", "."))

app = FastAPI()


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/upload/video")
async def keep(request: Request) -> dict[str, object]:
    hasher = hashlib.sha256()
    path = FILES / uuid.uuid4().hex
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    hash_thread = ThreadPoolExecutor(1)
    write_thread = ThreadPoolExecutor(1)
    pending: deque[tuple[Future[None], Future[int]]] = deque()
    pieces: list[bytes] = []
    buffered = position = 0

    def hash_block(block: list[bytes]) -> None:
        for piece in block:
            hasher.update(piece)

    def write_block(block: list[bytes], at: int) -> int:
        for piece in block:
            view = memoryview(piece)
            for start in range(0, len(view), WRITE_SIZE):
                part = view[start : start + WRITE_SIZE]
                while part:  # a short write leaves the rest for the next call
                    written = os.pwrite(fd, part, at)
                    at += written
                    part = part[written:]
        return at

    async def submit() -> None:
        nonlocal pieces, buffered, position
        block, pieces = pieces, []
        pending.append((hash_thread.submit(hash_block, block), write_thread.submit(write_block, block, position)))
        position += buffered
        buffered = 0
        while len(pending) > MAX_PENDING:
            for future in pending.popleft():
                await asyncio.wrap_future(future)

    try:
        async for data in request.stream():
            if data:
                pieces.append(data)
                buffered += len(data)
                if buffered >= BLOCK_SIZE:
                    await submit()
        await submit()
        while pending:
            for future in pending.popleft():
                await asyncio.wrap_future(future)
    finally:
        os.close(fd)
        hash_thread.shutdown()
        write_thread.shutdown()
    return {"received": position, "sha256": hasher.hexdigest(), "path": str(path)}
