"""One contract for every PartStore: the same tests over LocalPartStore (part files) and
S3PartStore (S3 multipart uploads on the machine's Swift), as the blob store contract does.

The S3 store runs with 5 MiB parts (S3's minimum) so that a few MiB exercise what matters:
parts sent while bytes arrive, the rest kept as an incomplete part and prepended to the next
request, seed chunks of at least 5 MiB as parts and smaller ones as objects."""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import active_session_row, wait_until
from tests.storage.swift import credentials, keys_in, raw_client, settings_for
from vidgate.db import migrate
from vidgate.db.engine import Database
from vidgate.db.upload_ids import SessionUploadIds
from vidgate.errors import VidgateError
from vidgate.hashing import new_sha256
from vidgate.storage import LocalBlobStore, LocalPartStore, PartStore
from vidgate.storage.s3 import RangeReader, S3BlobStore
from vidgate.storage.s3_parts import MIN_PART, S3PartStore

MIB = 1 << 20


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'parts.db'}")
    migrate.upgrade(database)
    yield database
    database.dispose()


@pytest.fixture
def new_key(db: Database) -> Callable[[], str]:
    """An upload's key: the id of a session row (the S3 store records its UploadId there)."""

    def make() -> str:
        return active_session_row(db, "clip.mp4")

    return make


@pytest.fixture(params=["local", "s3"])
def parts(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db: Database
) -> Iterator[PartStore]:
    if request.param == "local":
        yield LocalPartStore(tmp_path / "store")
        return
    bucket = request.getfixturevalue("bucket")
    credentials(monkeypatch)
    prefix = f"parts-{uuid.uuid4().hex[:8]}/"
    settings = settings_for(tmp_path, bucket, prefix, s3_part_size=5 * MIB, s3_concurrency=2)
    store = S3PartStore(
        S3BlobStore(settings.storage),
        SessionUploadIds(db),
        tmp_path / "host",
        max_file_size=500 * MIB,
    )
    yield store
    store.close()


def write(
    parts: PartStore, key: str, data: bytes, position: int, *, chunk_index: int | None = None, recorded: bool = True
) -> None:
    """One request's bytes through one writer, in 1 MiB blocks, flushed, and (unless the
    request's recording is to fail) recorded."""
    writer = parts.open_part(key, chunk_index=chunk_index)
    try:
        view = memoryview(data)
        for start in range(0, len(data), MIB):
            block = view[start : start + MIB]
            assert writer.write_at([block], position + start) == len(block)
        writer.flush()
        if recorded:
            writer.recorded()
    finally:
        writer.close()


def assembled(parts: PartStore, key: str, size: int, staged: list[tuple[str, int, int]] | None = None) -> str:
    hasher = new_sha256()
    parts.assemble(key, staged or [], size, hasher, 0, fsync=False)
    return str(hasher.hexdigest())


def contents(parts: PartStore, key: str) -> bytes:
    """The assembled file as validation reads it (a local file, or an object by ranges)."""
    source = parts.assembled(key)
    if isinstance(source, Path):
        return source.read_bytes()
    reader = source.reader()
    try:
        return reader.pread(source.size, 0)
    finally:
        reader.close()


def test_appended_requests_make_the_file(parts: PartStore, new_key: Callable[[], str]) -> None:
    """tus: requests of every size (under a part, several parts, a part's worth exactly)."""
    key = new_key()
    data = os.urandom(23 * MIB + 777)
    cuts = [0, 3 * MIB, 4 * MIB + 5, 16 * MIB, 21 * MIB, 23 * MIB + 777]
    for start, end in itertools.pairwise(cuts):
        write(parts, key, data[start:end], start)
    assert parts.exists(key)
    assert assembled(parts, key, len(data)) == hashlib.sha256(data).hexdigest()
    assert contents(parts, key) == data


def test_a_request_that_was_not_recorded_is_written_over(parts: PartStore, new_key: Callable[[], str]) -> None:
    """A request whose bytes reached the store but not the database (its recording failed, or
    it broke off before its flush) leaves nothing that the next request at the recorded
    offset does not replace."""
    key = new_key()
    first = os.urandom(2 * MIB)
    write(parts, key, first, 0)  # recorded: the offset is 2 MiB
    write(parts, key, os.urandom(9 * MIB), 2 * MIB)  # flushed, never recorded: a part of 5 MiB and a rest
    broken = parts.open_part(key)  # broke off before its flush: two parts may be on their way
    try:
        for start in range(0, 12 * MIB, MIB):
            broken.write_at([memoryview(os.urandom(MIB))], 2 * MIB + start)
    finally:
        broken.close()
    rest = os.urandom(MIB + 3)  # the client resumes at the recorded offset
    write(parts, key, rest, 2 * MIB)
    data = first + rest
    assert assembled(parts, key, len(data)) == hashlib.sha256(data).hexdigest()
    assert contents(parts, key) == data


def _chunks_in_parallel(parts: PartStore, key: str, data: bytes, chunk_size: int) -> None:
    """Every chunk in its own thread, last ones first (as parallel clients and hosts send them)."""
    count = -(-len(data) // chunk_size)
    errors: list[BaseException] = []

    def send(index: int) -> None:
        try:
            start = index * chunk_size
            write(parts, key, data[start : start + chunk_size], start, chunk_index=index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(index,)) for index in reversed(range(count))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


@pytest.mark.parametrize("chunk_size", [5 * MIB, MIB + 17], ids=["parts", "under-5MiB"])
def test_seed_chunks_in_any_order_make_the_file(parts: PartStore, new_key: Callable[[], str], chunk_size: int) -> None:
    key = new_key()
    data = os.urandom(3 * chunk_size + 1234)
    _chunks_in_parallel(parts, key, data, chunk_size)
    assert assembled(parts, key, len(data)) == hashlib.sha256(data).hexdigest()
    assert contents(parts, key) == data


def test_assembly_continues_the_running_hash(parts: PartStore, new_key: Callable[[], str]) -> None:
    """The hasher has seen the first chunk (streamed in order); assembly reads only the rest."""
    key = new_key()
    chunk_size = 5 * MIB
    data = os.urandom(2 * chunk_size + 99)
    _chunks_in_parallel(parts, key, data, chunk_size)
    hasher = new_sha256()
    hasher.update(data[:chunk_size])
    parts.assemble(key, [], len(data), hasher, chunk_size, fsync=False)
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()


def test_staged_chunks_are_placed_at_assembly(parts: PartStore, new_key: Callable[[], str]) -> None:
    """Chunks that came before chunk 0 told the chunk size wait apart, then land at their offsets."""
    key = new_key()
    chunk_size = 5 * MIB
    data = os.urandom(3 * chunk_size - 10)
    staged: list[tuple[str, int, int]] = []
    for index in (2, 1):
        piece = data[index * chunk_size : (index + 1) * chunk_size]
        location, writer = parts.stage(key, f"{index}.chunk")
        try:
            writer.write_at([memoryview(piece)], 0)
            writer.flush()
        finally:
            writer.close()
        staged.append((location, index * chunk_size, len(piece)))
    write(parts, key, data[:chunk_size], 0, chunk_index=0)
    assert assembled(parts, key, len(data), staged) == hashlib.sha256(data).hexdigest()
    assert contents(parts, key) == data


def test_a_discarded_staged_chunk_is_gone(parts: PartStore, new_key: Callable[[], str]) -> None:
    key = new_key()
    location, writer = parts.stage(key, "3.chunk")
    try:
        writer.write_at([memoryview(b"x" * 1000)], 0)
        writer.flush()
    finally:
        writer.close()
    parts.discard_staged(location)
    parts.discard_staged(location)  # twice: nothing to do
    if isinstance(parts, S3PartStore):
        assert not keys_in(parts.bucket, f"{parts.staging_key(key)}/")
    else:
        assert not Path(location).exists()


@pytest.mark.parametrize("sizes", [(6 * MIB, 5 * MIB, 100), (100, 7 * MIB)], ids=["copied", "read-back"])
def test_concatenation_joins_complete_uploads(
    parts: PartStore, new_key: Callable[[], str], sizes: tuple[int, ...]
) -> None:
    pieces = [os.urandom(size) for size in sizes]
    sources = []
    for piece in pieces:
        key = new_key()
        write(parts, key, piece, 0)
        sources.append((key, len(piece)))
    final = uuid.uuid4().hex  # the final upload's row does not exist yet when its data is made
    parts.concatenate(final, sources)
    data = b"".join(pieces)
    assert assembled(parts, final, len(data)) == hashlib.sha256(data).hexdigest()
    assert contents(parts, final) == data


def test_an_empty_upload(parts: PartStore, new_key: Callable[[], str]) -> None:
    key = new_key()
    assert not parts.exists(key)
    parts.create_empty(key)
    assert parts.exists(key)
    assert assembled(parts, key, 0) == hashlib.sha256(b"").hexdigest()
    assert contents(parts, key) == b""


def test_assembly_can_run_again(parts: PartStore, new_key: Callable[[], str]) -> None:
    """After a crash the sweep assembles again: same file, same hash, nothing sent twice."""
    key = new_key()
    data = os.urandom(7 * MIB + 3)
    write(parts, key, data, 0)
    digest = hashlib.sha256(data).hexdigest()
    assert assembled(parts, key, len(data)) == digest
    assert assembled(parts, key, len(data)) == digest
    assert contents(parts, key) == data


def test_hash_range_reads_the_assembled_file(parts: PartStore, new_key: Callable[[], str]) -> None:
    key = new_key()
    data = os.urandom(MIB + 5)
    write(parts, key, data, 0)
    assembled(parts, key, len(data))
    hasher = new_sha256()
    parts.hash_range(key, hasher, 100, 200_000)
    assert hasher.hexdigest() == hashlib.sha256(data[100:200_000]).hexdigest()


def test_store_moves_the_file_into_the_blob_store(parts: PartStore, new_key: Callable[[], str], tmp_path: Path) -> None:
    key = new_key()
    data = os.urandom(6 * MIB + 1)
    write(parts, key, data, 0)
    digest = assembled(parts, key, len(data))
    blobs = parts.blobs if isinstance(parts, S3PartStore) else LocalBlobStore(tmp_path / "store")
    assert contents(parts, key) == data  # validation read it
    assert parts.store(key, digest, blobs) == digest
    assert blobs.size(digest) == len(data)
    assert hashlib.sha256(b"".join(blobs.read_range(digest, 0, len(data)))).hexdigest() == digest


def test_remove_leaves_nothing(parts: PartStore, new_key: Callable[[], str]) -> None:
    key, other = new_key(), new_key()
    write(parts, key, os.urandom(6 * MIB), 0)
    write(parts, key, os.urandom(100), 6 * MIB)
    write(parts, other, os.urandom(100), 0)
    assert {key, other} <= {found for found, _ in parts.upload_ids_on_disk()}
    parts.remove(key)
    parts.remove(key)  # twice: nothing to do
    assert not parts.exists(key)
    assert key not in {found for found, _ in parts.upload_ids_on_disk()}
    assert other in {found for found, _ in parts.upload_ids_on_disk()}
    if isinstance(parts, S3PartStore):
        staging = parts.staging_key(key)
        assert not [k for k in keys_in(parts.bucket, parts.prefix) if k.startswith(staging)]
        uploads = raw_client().list_multipart_uploads(Bucket=parts.bucket, Prefix=staging).get("Uploads", [])
        assert not [u for u in uploads if u["Key"] == staging]


# ---------------------------------------------------------------------- S3 only
@pytest.fixture
def s3_parts(parts: PartStore) -> S3PartStore:
    if not isinstance(parts, S3PartStore):
        pytest.skip("S3 only")
    return parts


def test_a_rest_under_5_mib_waits_as_an_incomplete_part(s3_parts: S3PartStore, new_key: Callable[[], str]) -> None:
    key = new_key()
    write(s3_parts, key, os.urandom(7 * MIB), 0)
    upload_id = s3_parts.upload_id(key, create=False)
    assert upload_id is not None
    assert [p.size for p in s3_parts.list_parts(key, upload_id).values()] == [5 * MIB]
    assert keys_in(s3_parts.bucket, f"{s3_parts.staging_key(key)}/") == [s3_parts.piece_key(key, "incomplete", "2")]
    write(s3_parts, key, os.urandom(4 * MIB), 7 * MIB)  # the 2 MiB prepended: a part of 5 MiB, 1 MiB waits
    assert [p.size for p in s3_parts.list_parts(key, upload_id).values()] == [5 * MIB, 5 * MIB]
    assert s3_parts.piece_key(key, "incomplete", "3") in keys_in(s3_parts.bucket, f"{s3_parts.staging_key(key)}/")
    write(s3_parts, key, os.urandom(MIN_PART), 11 * MIB)  # 1 MiB + 5 MiB: one part (5 MiB), the rest waits
    assert len(s3_parts.list_parts(key, upload_id)) == 3


def test_two_hosts_agree_on_one_multipart_upload(
    s3_parts: S3PartStore, new_key: Callable[[], str], db: Database, tmp_path: Path
) -> None:
    """Two stores (two hosts) taking an upload's first chunks at the same moment."""
    other = S3PartStore(
        S3BlobStore(s3_parts.blobs.settings),
        SessionUploadIds(db),
        tmp_path / "other",
        max_file_size=MIB,
    )
    key = new_key()
    found: list[str | None] = []
    barrier = threading.Barrier(2)

    def take(store: S3PartStore) -> None:
        barrier.wait()
        found.append(store.upload_id(key))

    threads = [threading.Thread(target=take, args=(store,)) for store in (s3_parts, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(found)) == 1 and found[0] is not None
    staging = s3_parts.staging_key(key)
    uploads = raw_client().list_multipart_uploads(Bucket=s3_parts.bucket, Prefix=staging).get("Uploads", [])
    assert [u["UploadId"] for u in uploads if u["Key"] == staging] == found[:1]  # the loser aborted its own
    other.close()


def test_validation_reads_the_completed_object_by_ranges(
    s3_parts: S3PartStore, new_key: Callable[[], str], tmp_path: Path
) -> None:
    """No local copy of the file: scattered preads, each a ranged GET of a small window."""
    key = new_key()
    data = os.urandom(11 * MIB + 11)
    write(s3_parts, key, data, 0)
    assembled(s3_parts, key, len(data))
    source = s3_parts.assembled(key)
    assert source.size == len(data)
    reader = source.reader(64 * 1024)
    assert isinstance(reader, RangeReader)
    try:
        for offset, length in ((0, 16), (9 * MIB + 5, 16), (len(data) - 100, 500), (3 * MIB, 2 * MIB)):
            assert reader.pread(length, offset) == data[offset : offset + length]
        assert reader.fetched < 3 * MIB  # the windows asked for, never the file
    finally:
        reader.close()
    assert not [p for p in (tmp_path / "host").rglob("*") if p.is_file()]  # nothing downloaded


def test_a_stored_content_is_adopted_not_completed_nor_copied(
    s3_parts: S3PartStore, new_key: Callable[[], str]
) -> None:
    """The hash is known before assembly and the blob exists: the multipart upload is left as
    it is, validation reads the blob, storing copies nothing, removal aborts the upload."""
    data = os.urandom(7 * MIB + 1)
    digest = hashlib.sha256(data).hexdigest()
    first, second = new_key(), new_key()
    write(s3_parts, first, data, 0)
    assert not s3_parts.adopt(first, digest, len(data), s3_parts.blobs)  # not stored yet
    assembled(s3_parts, first, len(data))
    s3_parts.store(first, digest, s3_parts.blobs)
    s3_parts.remove(first)
    write(s3_parts, second, data, 0)
    assert s3_parts.adopt(second, digest, len(data), s3_parts.blobs)
    assert contents(s3_parts, second) == data
    assert s3_parts.store(second, digest, s3_parts.blobs) == digest
    staging = s3_parts.staging_key(second)
    assert staging not in keys_in(s3_parts.bucket, staging)  # never completed
    s3_parts.remove(second)
    uploads = raw_client().list_multipart_uploads(Bucket=s3_parts.bucket, Prefix=staging).get("Uploads", [])
    assert not [u for u in uploads if u["Key"] == staging]
    assert not [k for k in keys_in(s3_parts.bucket, s3_parts.prefix) if k.startswith(staging)]


def test_an_adopted_upload_whose_blob_went_away_is_completed_and_copied(
    s3_parts: S3PartStore, new_key: Callable[[], str]
) -> None:
    """A delete of the content withdrew the blob between adoption and storing: the parts are
    still there (only removal aborts them), so the upload is stored after all."""
    data = os.urandom(6 * MIB + 7)
    digest = hashlib.sha256(data).hexdigest()
    first, second = new_key(), new_key()
    write(s3_parts, first, data, 0)
    assembled(s3_parts, first, len(data))
    s3_parts.store(first, digest, s3_parts.blobs)
    s3_parts.remove(first)
    write(s3_parts, second, data, 0)
    assert s3_parts.adopt(second, digest, len(data), s3_parts.blobs)
    s3_parts.blobs.delete(digest)  # what a withdraw leaves at the content's key: nothing
    assert s3_parts.store(second, digest, s3_parts.blobs) == digest
    assert hashlib.sha256(b"".join(s3_parts.blobs.read_range(digest, 0, len(data)))).hexdigest() == digest
    s3_parts.remove(second)


def test_a_part_on_disk_is_the_finished_file_or_there_is_none(parts: PartStore, new_key: Callable[[], str]) -> None:
    """Local parts: the part file is the file (the probe may read it before the record); a
    multipart store has no such file, and saying so asks the bucket nothing."""
    key = new_key()
    data = os.urandom(2 * MIB + 5)
    write(parts, key, data, 0)
    on_disk = parts.file_on_disk(key)
    if isinstance(parts, S3PartStore):
        assert on_disk is None
    else:
        assert on_disk is not None and on_disk.read_bytes() == data
        assembled(parts, key, len(data))
        assert on_disk == parts.assembled(key) and on_disk.read_bytes() == data


def test_the_local_store_adopts_nothing(tmp_path: Path) -> None:
    store = LocalPartStore(tmp_path / "store")
    blobs = LocalBlobStore(tmp_path / "store")
    source = tmp_path / "file"
    source.write_bytes(b"x" * 10)
    digest = hashlib.sha256(b"x" * 10).hexdigest()
    blobs.put_file(digest, source)
    assert not store.adopt("key", digest, 10, blobs)


def test_removal_after_completion_runs_in_the_background(s3_parts: S3PartStore, new_key: Callable[[], str]) -> None:
    key = new_key()
    data = os.urandom(6 * MIB + 3)
    write(s3_parts, key, data, 0)
    assembled(s3_parts, key, len(data))
    s3_parts.store(key, hashlib.sha256(data).hexdigest(), s3_parts.blobs)
    s3_parts.remove(key, later=True)
    staging = s3_parts.staging_key(key)
    wait_until(lambda: not [k for k in keys_in(s3_parts.bucket, s3_parts.prefix) if k.startswith(staging)])


def test_parts_cannot_be_read_before_completion(s3_parts: S3PartStore, new_key: Callable[[], str]) -> None:
    """The running hash's catch-up gets a domain error (and leaves the rest to assembly)."""
    key = new_key()
    write(s3_parts, key, os.urandom(5 * MIB), 0, chunk_index=0)
    with pytest.raises(VidgateError):
        s3_parts.hash_range(key, new_sha256(), 0, 100)
