"""One contract for every BlobStore: the same tests over LocalBlobStore (a folder) and
S3BlobStore (Swift's S3 API on this machine), as tus-node-server runs one store suite over
every store it ships."""

from __future__ import annotations

import hashlib
import io
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.storage.swift import credentials, keys_in, settings_for
from vidgate.storage import BlobStore, LocalBlobStore
from vidgate.storage.s3 import S3BlobStore


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "store")
        return
    bucket = request.getfixturevalue("bucket")
    credentials(monkeypatch)
    prefix = f"contract-{uuid.uuid4().hex[:8]}/"
    yield S3BlobStore(settings_for(tmp_path, bucket, prefix).storage)


def _file(directory: Path, data: bytes, name: str = "upload.part") -> tuple[str, Path]:
    path = directory / name
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest(), path


def test_put_file_stores_once_by_content(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    digest, first = _file(tmp_path, data, "a")
    assert not store.exists(digest)
    assert store.put_file(digest, first) == digest
    assert not first.exists()  # taken in, not left behind
    assert store.exists(digest)
    _, second = _file(tmp_path, data, "b")
    assert store.put_file(digest, second) == digest
    assert not second.exists()  # a second copy of stored content is dropped
    assert store.size(digest) == len(data)
    with store.open(digest) as handle:
        assert handle.read() == data


def test_a_file_of_many_parts_comes_back_whole(store: BlobStore, tmp_path: Path) -> None:
    """Over S3 a file larger than the part size (5 MiB here) is a multipart upload."""
    if isinstance(store, S3BlobStore):
        store.settings = store.settings.model_copy(update={"s3_part_size": 5 << 20})
        assert store.part_size_for(13 << 20) == 5 << 20
    data = os.urandom((13 << 20) + 12345)
    digest, path = _file(tmp_path, data)
    store.put_file(digest, path)
    assert store.size(digest) == len(data)
    streamed = hashlib.sha256()
    for chunk in store.read_range(digest, 0, len(data), chunk_size=1 << 20):
        assert len(chunk) <= 1 << 20
        streamed.update(chunk)
    assert streamed.hexdigest() == digest


def test_a_blob_of_many_parts_is_withdrawn_and_restored(store: BlobStore, tmp_path: Path) -> None:
    """A multipart blob (its ETag "...-N") copies aside and back: s3transfer's part copies send the
    source ETag as a precondition, which Swift refuses for a multipart ETag (PreconditionFailed)."""
    if isinstance(store, S3BlobStore):
        store.settings = store.settings.model_copy(update={"s3_part_size": 5 << 20})
    data = os.urandom((11 << 20) + 7)
    digest, path = _file(tmp_path, data)
    store.put_file(digest, path)
    assert store.withdraw(digest) and not store.exists(digest)
    store.restore(digest)
    assert store.size(digest) == len(data)
    assert hashlib.sha256(b"".join(store.read_range(digest, 0, len(data)))).hexdigest() == digest


def test_read_range_gives_exactly_the_range(store: BlobStore, tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000
    digest, path = _file(tmp_path, data)
    store.put_file(digest, path)
    for start, end in ((0, 1), (10, 20), (255, 256_000), (100_000, 100_001), (0, len(data))):
        assert b"".join(store.read_range(digest, start, end, chunk_size=4096)) == data[start:end]
    assert b"".join(store.read_range(digest, 5, 5)) == b""


def test_open_is_a_seekable_file(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    digest, path = _file(tmp_path, data)
    store.put_file(digest, path)
    with store.open(digest) as handle:
        assert handle.seekable()
        handle.seek(1000)
        assert handle.read(10) == data[1000:1010]
        handle.seek(-5, io.SEEK_END)
        assert handle.read() == data[-5:]
        handle.seek(0)
        assert handle.read(3) == data[:3]
        assert handle.tell() == 3


def test_open_reads_on_in_one_stream_and_holds_one_window(store: BlobStore, tmp_path: Path) -> None:
    """Processing reads a stored video from start to end (PyAV, skipping a little here and there):
    over S3 that is one ranged GET going on (a window ahead skips in it), and only a seek back or
    further ahead starts another; never more than one window is held."""
    window = 64 << 10
    if isinstance(store, S3BlobStore):
        store.settings = store.settings.model_copy(update={"s3_read_buffer": window})
    data = os.urandom((1 << 20) + 4321)
    digest, path = _file(tmp_path, data)
    store.put_file(digest, path)
    with store.open(digest) as handle:
        reader = getattr(handle, "raw", None) if isinstance(store, S3BlobStore) else None
        got = bytearray()
        while piece := handle.read(4096):
            got += piece
            if len(got) % (100 * 4096) == 0:  # PyAV skipping a few bytes: still the same GET
                handle.seek(3000, io.SEEK_CUR)
                got += data[len(got) : len(got) + 3000]
            if reader is not None:
                assert reader.held <= window
        assert bytes(got) == data
        if reader is not None:
            assert reader.requests == 1
        handle.seek(10)  # back: another GET, which goes on again
        assert handle.read(window * 3) == data[10 : 10 + window * 3]
        handle.seek(len(data) - 5000)  # far ahead: another
        assert handle.read() == data[-5000:]
        if reader is not None:
            assert reader.requests == 3
            assert reader.held <= window


def test_missing_keys(store: BlobStore) -> None:
    digest = hashlib.sha256(b"never stored").hexdigest()
    assert not store.exists(digest)
    with pytest.raises(FileNotFoundError):
        store.size(digest)
    with pytest.raises(FileNotFoundError):
        store.open(digest)
    with pytest.raises(FileNotFoundError):
        list(store.read_range(digest, 0, 10))
    store.delete(digest)  # deleting what is not there is no error


def test_keys_are_checked(store: BlobStore) -> None:
    for bad in ("../../etc/passwd", "abc", "A" * 64):
        with pytest.raises(ValueError):
            store.exists(bad)
    digest = hashlib.sha256(b"x").hexdigest()
    for name in ("../x", "Poster.jpg", ""):
        with pytest.raises(ValueError):
            store.derived_key(digest, name)


def test_delete(store: BlobStore, tmp_path: Path) -> None:
    digest, path = _file(tmp_path, b"to be deleted")
    store.put_file(digest, path)
    store.delete(digest)
    assert not store.exists(digest)


def test_derived_files_replace_and_go_with_their_content(store: BlobStore, tmp_path: Path) -> None:
    digest, path = _file(tmp_path, b"the video")
    store.put_file(digest, path)
    for name, body in (("poster.jpg", b"old poster"), ("poster.jpg", b"new poster"), ("storyboard.json", b"{}")):
        source = tmp_path / name
        source.write_bytes(body)
        key = store.put_derived(digest, name, source)
        assert key == store.derived_key(digest, name)
        assert not source.exists()
    poster = store.derived_key(digest, "poster.jpg")
    assert b"".join(store.read_range(poster, 0, store.size(poster))) == b"new poster"
    store.delete_derived(digest)
    with pytest.raises(FileNotFoundError):
        store.size(poster)
    assert store.exists(digest)  # the content itself stays


def test_derived_files_are_listed_in_key_order_with_when_they_were_put(store: BlobStore, tmp_path: Path) -> None:
    """What the library's sweep holds against the database (pictures whose content is gone)."""
    assert list(store.derived_files()) == []
    digests = []
    started = time.time()
    for body in (b"first video", b"second video", b"third video"):
        digest, path = _file(tmp_path, body)
        store.put_file(digest, path)
        digests.append(digest)
        for name in ("storyboard.json", "poster.jpg", "storyboard.jpg"):
            source = tmp_path / name
            source.write_bytes(name.encode())
            store.put_derived(digest, name, source)
    listed = list(store.derived_files())
    keys = [key for key, _ in listed]  # the blobs themselves are not derived files
    assert keys == sorted(
        store.derived_key(d, n) for d in digests for n in ("poster.jpg", "storyboard.jpg", "storyboard.json")
    )
    assert all(started - 5 <= put_at <= time.time() + 5 for _, put_at in listed)  # Unix time (S3: to the second)
    store.delete_derived(digests[1])
    assert [key for key, _ in store.derived_files()] == [k for k in keys if not k.startswith(digests[1])]


def test_local_path_only_where_the_file_is_local(store: BlobStore, tmp_path: Path) -> None:
    digest, path = _file(tmp_path, b"where am I")
    store.put_file(digest, path)
    local = store.local_path(digest)
    if isinstance(store, S3BlobStore):
        assert local is None
        assert store.scratch_dir() is None
    else:
        assert local is not None and local.read_bytes() == b"where am I"


def test_check(store: BlobStore) -> None:
    store.check()


def test_s3_keys_are_content_addressed_under_the_prefix(store: BlobStore, tmp_path: Path) -> None:
    if not isinstance(store, S3BlobStore):
        pytest.skip("the bucket's layout")
    digest, path = _file(tmp_path, b"layout")
    store.put_file(digest, path)
    poster = tmp_path / "poster.jpg"
    poster.write_bytes(b"jpeg")
    store.put_derived(digest, "poster.jpg", poster)
    assert keys_in(store.bucket, store.prefix) == [
        f"{store.prefix}blobs/{digest[:2]}/{digest}",
        f"{store.prefix}derived/{digest[:2]}/{digest}/poster.jpg",
    ]


def test_a_withdrawn_blob_is_out_of_reach_until_restored_or_purged(store: BlobStore, tmp_path: Path) -> None:
    """What the library's delete relies on: after withdraw, put_file of the same bytes stores
    its own copy; restore puts the blob back (or drops it if a new copy is there)."""
    digest, source = _file(tmp_path, b"bytes", "a")
    store.put_file(digest, source)
    assert store.withdraw(digest) and not store.exists(digest)
    assert [key for key, _ in store.withdrawn()] == [digest]
    assert not store.withdraw(digest)  # nothing left to withdraw
    store.restore(digest)
    assert store.exists(digest) and list(store.withdrawn()) == []
    assert store.withdraw(digest)
    _, again = _file(tmp_path, b"bytes", "b")
    store.put_file(digest, again)  # stored afresh, not dropped
    assert not again.exists() and store.exists(digest)
    store.restore(digest)  # a copy is there: the withdrawn one is dropped
    assert store.open(digest).read() == b"bytes" and list(store.withdrawn()) == []
    assert store.withdraw(digest)
    store.purge_withdrawn(digest)
    assert not store.exists(digest) and list(store.withdrawn()) == []
