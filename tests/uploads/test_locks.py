"""Chunk locks: one contract suite run over every Locker (file, Redis), then what only the
Redis locker does (lease renewal, the file-lock fallback while Redis is down, and no fallback
when uploads in progress live in the bucket)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vidgate.errors import ChunkInProgress, LockUnavailable
from vidgate.uploads.locks import FileLocker, Locker, RedisLocker

REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["file", "redis"])
def lockers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Locker]]:
    """Makes lockers of one kind that stand for separate processes sharing the lock state (the
    lock folder of one host, or one Redis)."""
    shared = tmp_path / "locks"
    count = iter(range(1000))

    def file_locker() -> Locker:
        return FileLocker(shared)

    def redis_locker() -> Locker:
        return RedisLocker(REDIS, FileLocker(tmp_path / f"fallback-{next(count)}"))

    yield file_locker if request.param == "file" else redis_locker


def test_a_held_lock_refuses_a_second_holder_at_once_and_frees_on_release(lockers: Callable[[], Locker]) -> None:
    first, second = lockers(), lockers()
    row_id = uuid.uuid4().hex
    started = time.monotonic()
    with first.hold(row_id, "tus"), pytest.raises(ChunkInProgress), second.hold(row_id, "tus"):
        pass
    assert time.monotonic() - started < 1  # refused at once, never waits
    with second.hold(row_id, "tus"):
        pass


def test_the_same_locker_does_not_reenter_its_own_lock(lockers: Callable[[], Locker]) -> None:
    locker = lockers()
    row_id = uuid.uuid4().hex
    with locker.hold(row_id, "chunk-0"), pytest.raises(ChunkInProgress), locker.hold(row_id, "chunk-0"):
        pass


def test_other_names_and_other_uploads_are_separate_locks(lockers: Callable[[], Locker]) -> None:
    first, second = lockers(), lockers()
    row_id, other = uuid.uuid4().hex, uuid.uuid4().hex
    with first.hold(row_id, "chunk-0"), second.hold(row_id, "chunk-1"), second.hold(other, "chunk-0"):
        pass


def test_a_lock_is_released_when_its_holder_raises(lockers: Callable[[], Locker]) -> None:
    first, second = lockers(), lockers()
    row_id = uuid.uuid4().hex
    with pytest.raises(RuntimeError), first.hold(row_id, "tus"):
        raise RuntimeError("the request failed")
    with second.hold(row_id, "tus"):
        pass


def test_the_file_locker_keeps_one_file_for_every_lock(tmp_path: Path) -> None:
    """No file is made or deleted per upload (see FileLocker): the folder holds the one lock file."""
    locker = FileLocker(tmp_path / "locks")
    with locker.hold("row", "chunk-0"), locker.hold("row", "chunk-1"), locker.hold("rowing", "tus"):
        assert [p.name for p in (tmp_path / "locks").iterdir()] == ["chunks.lock"]
    assert [p.name for p in (tmp_path / "locks").iterdir()] == ["chunks.lock"]


def test_the_file_locker_tells_a_held_lock_without_taking_it(tmp_path: Path) -> None:
    locker, other = FileLocker(tmp_path / "locks"), FileLocker(tmp_path / "locks")
    assert not other.is_held("row", "tus")
    with locker.hold("row", "tus"):
        assert other.is_held("row", "tus") and locker.is_held("row", "tus")
        assert not other.is_held("row", "chunk-0") and not other.is_held("rowing", "tus")
        with other.hold("row", "chunk-0"):  # asking took nothing
            pass
    assert not other.is_held("row", "tus")


def test_a_file_lock_held_by_another_process_refuses_and_is_freed_when_it_dies(tmp_path: Path) -> None:
    """The kernel releases a dead holder's lock: a crashed request never leaves an upload locked."""
    root = tmp_path / "locks"
    FileLocker(root)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from vidgate.uploads.locks import FileLocker\n"
            f"with FileLocker(Path({str(root)!r})).hold('row', 'tus'):\n"
            "    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        locker = FileLocker(root)
        assert locker.is_held("row", "tus")
        with pytest.raises(ChunkInProgress), locker.hold("row", "tus"):
            pass
        with locker.hold("row", "chunk-0"), locker.hold("other", "tus"):  # only that lock is taken
            pass
    finally:
        holder.kill()
        holder.wait()
    with locker.hold("row", "tus"):
        pass


def test_the_redis_lock_excludes_a_second_holder_in_another_process_and_frees_on_release(tmp_path: Path) -> None:
    first = RedisLocker(REDIS, FileLocker(tmp_path / "a"))
    second = RedisLocker(REDIS, FileLocker(tmp_path / "b"))
    row_id = uuid.uuid4().hex
    with first.hold(row_id, "tus"), pytest.raises(ChunkInProgress), second.hold(row_id, "tus"):
        pass
    with second.hold(row_id, "tus"):
        pass


def test_the_redis_lock_is_renewed_while_held(tmp_path: Path) -> None:
    locker = RedisLocker(REDIS, FileLocker(tmp_path / "a"), lease_seconds=0.6)
    other = RedisLocker(REDIS, FileLocker(tmp_path / "b"), lease_seconds=0.6)
    row_id = uuid.uuid4().hex
    with locker.hold(row_id, "tus"):
        time.sleep(1.5)  # longer than the lease: only renewal keeps it
        with pytest.raises(ChunkInProgress), other.hold(row_id, "tus"):
            pass


def test_while_redis_is_down_the_file_lock_keeps_uploads_going_and_exclusive(tmp_path: Path) -> None:
    shared = tmp_path / "locks"  # two processes of one host share the lock folder
    first = RedisLocker("redis://127.0.0.1:1/0", FileLocker(shared))
    second = RedisLocker("redis://127.0.0.1:1/0", FileLocker(shared))
    with first.hold("upload", "tus"), pytest.raises(ChunkInProgress), second.hold("upload", "tus"):
        pass
    with second.hold("upload", "tus"):
        pass


def test_while_redis_is_down_uploads_in_the_bucket_are_refused_not_written_under_a_host_lock(tmp_path: Path) -> None:
    """Parts in the bucket: any host writes any upload, so a per-host file lock would not
    exclude the other hosts; the write is refused (503 lock_unavailable) instead."""
    locker = RedisLocker("redis://127.0.0.1:1/0", FileLocker(tmp_path / "locks"), shared_parts=True)
    written = False
    with pytest.raises(LockUnavailable) as refused, locker.hold("upload", "tus"):
        written = True
    assert not written
    assert refused.value.status == 503 and refused.value.code == "lock_unavailable"
    with RedisLocker(REDIS, FileLocker(tmp_path / "locks"), shared_parts=True).hold("upload", "tus"):
        pass  # with Redis there, the same upload is locked as ever
