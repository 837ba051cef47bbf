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
