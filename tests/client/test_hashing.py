"""StreamingHash: the file's SHA-256 whatever order its blocks are read in, each byte read once
when they come in order."""

from __future__ import annotations

import hashlib
import os
import random
import threading
from pathlib import Path

from vidgate.client.hashing import BackgroundHash, StreamingHash


def test_in_order_blocks_are_hashed_as_they_come(tmp_path: Path) -> None:
    data = random.randbytes(300_000)
    file = tmp_path / "f"
    file.write_bytes(data)
    fd = os.open(file, os.O_RDONLY)
    try:
        hasher = StreamingHash(fd, len(data))
        for offset in range(0, len(data), 70_000):
            hasher.feed(offset, data[offset : offset + 70_000])
        assert hasher.frontier == len(data)  # nothing left to read again
        assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()
    finally:
        os.close(fd)


def test_out_of_order_and_repeated_blocks_give_the_same_hash(tmp_path: Path) -> None:
    data = random.randbytes(250_000)
    file = tmp_path / "f"
    file.write_bytes(data)
    fd = os.open(file, os.O_RDONLY)
    try:
        hasher = StreamingHash(fd, len(data))
        blocks = [(o, data[o : o + 10_000]) for o in range(0, len(data), 10_000)]
        random.Random(7).shuffle(blocks)
        background = BackgroundHash(hasher)
        feeders = [
            threading.Thread(target=lambda part=part: [hasher.feed(o, b) for o, b in part])
            for part in (blocks[::2], blocks[1::2], blocks[:5])
        ]
        for thread in feeders:
            thread.start()
        for thread in feeders:
            thread.join()
        background.join()
        hasher.feed(5, data[5:20_000])  # a retried block behind the frontier changes nothing
        assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()
    finally:
        os.close(fd)


def test_a_gap_is_read_from_disk(tmp_path: Path) -> None:
    data = random.randbytes(100_000)
    file = tmp_path / "f"
    file.write_bytes(data)
    fd = os.open(file, os.O_RDONLY)
    try:
        hasher = StreamingHash(fd, len(data))
        hasher.feed(50_000, data[50_000:])  # ahead of the frontier: not hashed yet
        assert hasher.frontier == 0
        hasher.catch_up(40_000)
        hasher.feed(30_000, data[30_000:60_000])  # overlaps the frontier: only the new part counts
        assert hasher.frontier == 60_000
        assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()
    finally:
        os.close(fd)
