from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from vidgate.storage import LocalBlobStore, PartStore


def test_blob_store_is_content_addressed(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    data = b"video bytes"
    digest = hashlib.sha256(data).hexdigest()
    first = tmp_path / "a"
    first.write_bytes(data)
    assert blobs.put_file(digest, first) == digest
    assert not first.exists()  # moved, not copied
    second = tmp_path / "b"
    second.write_bytes(data)
    blobs.put_file(digest, second)
    assert not second.exists()  # a second copy of stored content is dropped
    assert blobs.exists(digest)
    with blobs.open(digest) as handle:
        assert handle.read() == data
    assert blobs.size(digest) == len(data)
    with pytest.raises(ValueError):
        blobs.open("../../etc/passwd")


def test_part_store_writes_at_offsets_and_removes(tmp_path: Path) -> None:
    parts = PartStore(tmp_path)
    fd = parts.open_part("u1", reserve=10)
    os.pwrite(fd, b"world", 5)
    os.pwrite(fd, b"hello", 0)
    os.close(fd)
    assert parts.part_path("u1").read_bytes() == b"helloworld"
    parts.staging_path("u1", "3.chunk").write_bytes(b"x")
    assert {upload_id for upload_id, _ in parts.upload_ids_on_disk()} == {"u1"}
    parts.remove("u1")
    assert list(parts.upload_ids_on_disk()) == []


def test_read_range_reads_only_the_range_in_chunks(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    data = os.urandom(10_000)
    digest = hashlib.sha256(data).hexdigest()
    source = tmp_path / "src"
    source.write_bytes(data)
    blobs.put_file(digest, source)
    chunks = list(blobs.read_range(digest, 1000, 4000, chunk_size=1024))
    assert [len(c) for c in chunks] == [1024, 1024, 952]
    assert b"".join(chunks) == data[1000:4000]
    assert blobs.local_path(digest) == blobs.path(digest)


def test_derived_files_belong_to_their_content_and_are_replaced(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    digest = hashlib.sha256(b"x").hexdigest()
    for version in (b"first", b"second"):
        made = tmp_path / "made.jpg"
        made.write_bytes(version)
        key = blobs.put_derived(digest, "poster.jpg", made)
    assert key == blobs.derived_key(digest, "poster.jpg") == f"{digest}/poster.jpg"
    path = blobs.local_path(key)
    assert path is not None and path.read_bytes() == b"second"
    for name in ("../poster.jpg", "a/b", "", "Poster.JPG"):
        with pytest.raises(ValueError):
            blobs.local_path(f"{digest}/{name}" if name else f"{digest}/")
    blobs.delete_derived(digest)
    assert not path.exists()


def test_a_withdrawn_blob_is_out_of_reach_until_restored_or_purged(tmp_path: Path) -> None:
    """What the library's delete relies on: after withdraw, put_file of the same bytes stores
    its own copy; restore puts the blob back (or drops it if a new copy is there)."""
    blobs = LocalBlobStore(tmp_path)
    digest = "ab" * 32
    source = tmp_path / "a"
    source.write_bytes(b"bytes")
    blobs.put_file(digest, source)
    assert blobs.withdraw(digest) and not blobs.exists(digest)
    assert [key for key, _ in blobs.withdrawn()] == [digest]
    assert not blobs.withdraw(digest)  # nothing left to withdraw
    blobs.restore(digest)
    assert blobs.exists(digest) and list(blobs.withdrawn()) == []
    assert blobs.withdraw(digest)
    again = tmp_path / "b"
    again.write_bytes(b"bytes")
    blobs.put_file(digest, again)  # stored afresh, not dropped
    assert not again.exists() and blobs.exists(digest)
    blobs.restore(digest)  # a copy is there: the withdrawn one is dropped
    assert blobs.open(digest).read() == b"bytes" and list(blobs.withdrawn()) == []
    assert blobs.withdraw(digest)
    blobs.purge_withdrawn(digest)
    assert not blobs.exists(digest) and list(blobs.withdrawn()) == []
