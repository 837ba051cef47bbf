"""HashFrontier: the running file hash follows in-order chunks as they stream and catches up
over chunks that arrived ahead of it by reading them from the part file."""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

from vidgate.hashing import Hasher
from vidgate.storage import LocalPartStore
from vidgate.uploads.frontier import HashFrontier

CHUNK = 1 << 20


Read = Callable[[Hasher, int, int], None]


def _part(tmp_path: Path, chunks: int, key: str = "part") -> tuple[Read, bytes]:
    """A part file of ``chunks`` random chunks and the part store's reader of it."""
    data = os.urandom(chunks * CHUNK)
    store = LocalPartStore(tmp_path)
    store.part_path(key).parent.mkdir(parents=True, exist_ok=True)
    store.part_path(key).write_bytes(data)
    return functools.partial(store.hash_range, key), data


def test_chunks_ahead_of_the_frontier_are_hashed_once_the_gap_is_filled(tmp_path: Path) -> None:
    part, data = _part(tmp_path, 4)
    frontier = HashFrontier()
    assert frontier.claim("u", CHUNK) is None  # chunk 1 first: not where the frontier is
    assert not frontier.stored("u", CHUNK, CHUNK)
    assert not frontier.stored("u", 3 * CHUNK, CHUNK)
    hasher = frontier.claim("u", 0)  # chunk 0 streams in order
    assert hasher is not None
    assert not frontier.stored("u", 2 * CHUNK, CHUNK)  # no catch-up beside a streaming claim
    hasher.update(data[:CHUNK])
    frontier.commit("u", CHUNK)
    assert frontier.stored("u", 0, CHUNK)  # the gap is filled: chunks 1 and 2 (and 3) follow
    frontier.catch_up("u", part)
    hasher, upto = frontier.take("u")
    assert upto == 4 * CHUNK
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()


def test_a_catch_up_that_cannot_read_leaves_the_frontier_as_it_was(tmp_path: Path) -> None:
    part, data = _part(tmp_path, 2)
    frontier = HashFrontier()
    hasher = frontier.claim("u", 0)
    assert hasher is not None
    hasher.update(data[:CHUNK])
    frontier.commit("u", CHUNK)
    assert frontier.stored("u", CHUNK, CHUNK)
    frontier.catch_up(
        "u", functools.partial(LocalPartStore(tmp_path).hash_range, "gone")
    )  # the upload was cancelled meanwhile
    assert frontier.claim("u", CHUNK) is not None  # still at one chunk, and claimable
    frontier.rollback("u")
    frontier.catch_up("u", part)
    hasher, upto = frontier.take("u")
    assert (upto, hasher.hexdigest()) == (2 * CHUNK, hashlib.sha256(data).hexdigest())


def test_take_waits_for_a_running_catch_up_instead_of_starting_over(tmp_path: Path) -> None:
    part, data = _part(tmp_path, 96)
    for _ in range(3):
        frontier = HashFrontier()
        for index in range(1, 96):
            frontier.stored("u", index * CHUNK, CHUNK)
        hasher = frontier.claim("u", 0)
        assert hasher is not None
        hasher.update(data[:CHUNK])
        frontier.commit("u", CHUNK)
        assert frontier.stored("u", 0, CHUNK)
        running = threading.Thread(target=frontier.catch_up, args=("u", part))
        running.start()
        hasher, upto = frontier.take("u")  # while ~95 MiB are being hashed
        running.join()
        assert upto == len(data)
        assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()


def test_a_claim_and_take_wait_for_hashing_left_running_by_the_last_commit() -> None:
    """A tus PATCH answers before its running hash is done (commit with ``hashing``): the next
    claim copies the hasher only after those bytes are in, and take returns it complete."""
    from concurrent.futures import ThreadPoolExecutor

    frontier = HashFrontier()
    data = os.urandom(3 * CHUNK)
    hasher = frontier.claim("u", 0)
    assert hasher is not None
    release = threading.Event()
    with ThreadPoolExecutor(1) as lane:

        def late_update() -> None:
            assert release.wait(30)
            hasher.update(data[:CHUNK])

        frontier.commit("u", CHUNK, lane.submit(late_update))
        threading.Timer(0.2, release.set).start()
        again = frontier.claim("u", CHUNK)  # waits for the late update before copying
        assert again is hasher
        again.update(data[CHUNK : 2 * CHUNK])
        frontier.rollback("u")  # the restored copy is the state after the late update
        again = frontier.claim("u", CHUNK)
        assert again is not None
        again.update(data[CHUNK:])
        frontier.commit("u", 2 * CHUNK, lane.submit(lambda: None))
        taken, upto = frontier.take("u")
    assert upto == 3 * CHUNK
    assert taken.hexdigest() == hashlib.sha256(data).hexdigest()


def test_hashing_that_failed_leaves_the_file_to_be_hashed_from_the_part() -> None:
    from concurrent.futures import Future

    frontier = HashFrontier()
    assert frontier.claim("u", 0) is not None
    failed: Future[None] = Future()
    failed.set_exception(RuntimeError("the hash thread died"))
    frontier.commit("u", CHUNK, failed)
    assert frontier.claim("u", CHUNK) is None  # not to be trusted: no longer followed
    taken, upto = frontier.take("u")
    assert upto == 0 and taken.hexdigest() == hashlib.sha256(b"").hexdigest()
