"""The discarder: a path leaves its name at once and its space is freed by a background thread;
a crash's leftovers go with the next discarder; another filesystem is deleted at once."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from vidgate.storage.discard import Discarder
from vidgate.storage.local import DISCARD_FOLDER, LocalBlobStore, LocalPartStore


def _file(path: Path, size: int = 1 << 20) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def test_a_discarded_file_leaves_its_name_at_once_and_the_disk_soon(tmp_path: Path) -> None:
    discarder = Discarder(tmp_path / "discarding")
    doomed = _file(tmp_path / "parts" / "a.part")
    discarder.discard(doomed)
    assert not doomed.exists()
    discarder.wait()
    assert list((tmp_path / "discarding").iterdir()) == []


def test_a_folder_is_discarded_whole_and_a_missing_path_is_nothing(tmp_path: Path) -> None:
    discarder = Discarder(tmp_path / "discarding")
    folder = tmp_path / "staging" / "row"
    _file(folder / "chunk-1")
    _file(folder / "chunk-2")
    discarder.discard(folder)
    discarder.discard(tmp_path / "staging" / "never-made")
    assert not folder.exists()
    discarder.wait()
    assert list((tmp_path / "discarding").iterdir()) == []
    assert (tmp_path / "staging").is_dir()  # only what was named goes


def test_what_a_crash_left_aside_is_deleted_by_the_next_discarder(tmp_path: Path) -> None:
    root = tmp_path / "discarding"
    _file(root / "0123-a.part")
    _file(root / "4567-row" / "chunk-0")
    Discarder(root).wait()
    assert list(root.iterdir()) == []


def test_its_thread_ends_when_idle_and_a_later_discard_starts_another(tmp_path: Path) -> None:
    discarder = Discarder(tmp_path / "discarding", idle_seconds=0.05)
    discarder.discard(_file(tmp_path / "first"))
    discarder.wait()
    deadline = time.monotonic() + 10
    while discarder._thread is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert discarder._thread is None
    second = _file(tmp_path / "second")
    discarder.discard(second)
    discarder.wait()
    assert not second.exists()
    assert list((tmp_path / "discarding").iterdir()) == []


def test_a_file_on_another_filesystem_is_deleted_at_once(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem here")
    discarder = Discarder(tmp_path / "discarding")
    elsewhere = _file(shm / f"vidgate-discard-{os.getpid()}-{time.monotonic_ns()}", 4096)
    discarder.discard(elsewhere)
    assert not elsewhere.exists()
    assert list((tmp_path / "discarding").iterdir()) == []


def test_a_duplicate_put_file_keeps_the_stored_copy_and_discards_the_part(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    data = os.urandom(1 << 16)
    digest = hashlib.sha256(data).hexdigest()
    first, second = tmp_path / "parts" / "1.part", tmp_path / "parts" / "2.part"
    first.parent.mkdir()
    first.write_bytes(data)
    second.write_bytes(data)
    blobs.put_file(digest, first)
    blobs.put_file(digest, second)
    assert not second.exists()
    assert blobs.path(digest).read_bytes() == data
    blobs.discarder.wait()
    assert list((tmp_path / DISCARD_FOLDER).iterdir()) == []


def test_removing_an_upload_discards_its_part_and_staged_chunks(tmp_path: Path) -> None:
    parts = LocalPartStore(tmp_path)
    part = parts.open_part("row")
    part.write_at([memoryview(b"x" * 4096)], 0)
    part.close()
    _file(parts.staging_path("row", "chunk-3"), 4096)
    parts.remove("row")
    assert not parts.exists("row")
    assert not (parts.staging_dir / "row").exists()
    assert list(parts.upload_ids_on_disk()) == []
    parts.discarder.wait()
    assert list((tmp_path / DISCARD_FOLDER).iterdir()) == []


def test_a_discard_folder_removed_since_is_made_again_and_the_path_still_goes(tmp_path: Path) -> None:
    discarder = Discarder(tmp_path / "discarding")
    (tmp_path / "discarding").rmdir()  # an operator's clean-up
    doomed = _file(tmp_path / "parts" / "a.part")
    discarder.discard(doomed)
    assert not doomed.exists()
    discarder.wait()
    assert list((tmp_path / "discarding").iterdir()) == []


def test_the_stores_of_one_folder_share_one_discarder(tmp_path: Path) -> None:
    assert LocalPartStore(tmp_path).discarder is LocalBlobStore(tmp_path).discarder
    assert LocalPartStore(tmp_path / "other").discarder is not LocalPartStore(tmp_path).discarder
