"""Uploads in progress in an S3 bucket, as tusd's s3store keeps them (``STORAGE_BACKEND=s3``).

Each upload is one S3 multipart upload of the object ``<prefix>uploads/<key>`` (the staging
key). Its UploadId is kept on the upload's database row (:class:`UploadIds`, set once by a
conditional UPDATE, so two hosts taking an upload's first chunks at once agree on one); no
byte of an upload lives on an API host after its request answered, so any host takes any
chunk or PATCH and a host can die without losing an acknowledged byte.

- **tus (and a one-chunk seed upload)** appends: a request's bytes are spooled to a bounded
  local temporary file and sent as parts of ``STORAGE_S3_PART_SIZE`` while they arrive (at
  most ``STORAGE_S3_CONCURRENCY`` in flight); at the end of the request a rest of at least
  5 MiB (S3's part minimum) is a part too, a smaller rest is kept as the object
  ``uploads/<key>/incomplete/<n>`` (the part ``n`` it will begin) and prepended to the next
  request's bytes. Where a request starts is found from the database's offset and ListParts:
  the parts ``1..m`` whose sizes add up to at most the offset, the rest (< 5 MiB) in
  ``incomplete/<m+1>``. A host that flushed and recorded the request ending at that offset knows
  those parts itself (:class:`Tails`) and lists none (on Swift a ListParts costs about what an
  UploadPart does). A part left by a request that was not recorded is always bigger than
  what follows the committed ones (parts are >= 5 MiB, a committed rest is smaller), so it is
  never taken for committed, and the next request overwrites it. Incomplete objects are only
  written at the committed offset and begin with the committed bytes, so a request whose
  recording failed leaves nothing the next one cannot use; they are deleted with the upload.
- **seed chunks** are indexed: chunk ``i`` of at least 5 MiB becomes part ``i + 1`` (parallel
  and out of order, from any host); a smaller one (the last chunk, or every chunk when the
  chunk size is under 5 MiB) is the object ``uploads/<key>/chunk/<i>``, and a chunk whose
  offset is not known yet (staged) ``uploads/<key>/staged/<name>``. At assembly, objects
  become parts by UploadPartCopy (server-side) when the chunk size is at least 5 MiB; with
  smaller chunks the chunk objects are read back in order and sent as parts (one extra pass
  through this host, measured in docs/design.md).
- **assemble** is CompleteMultipartUpload into the staging key; the running SHA-256 is finished
  with ranged GETs of what was not hashed in order (parts cannot be read before completion).
  Validation reads the completed object by ranged GETs (:meth:`S3PartStore.assembled`: no local
  copy), and :meth:`S3PartStore.store` stores it content-addressed by a server-side copy. When
  the SHA-256 is known before assembly (hashed in order, the usual tus upload) and that content
  is stored already, :meth:`S3PartStore.adopt` skips both: validation reads the stored blob and
  the multipart upload is aborted. (An UploadId belongs to the key it was created for, so an
  upload whose content is new cannot be completed into the content's key instead of copied.)
- **remove** aborts every multipart upload of the key (ListMultipartUploads) and deletes its
  objects with one DeleteObjects (after a completion, in the background); the orphan sweep
  finds both through :meth:`S3PartStore.upload_ids_on_disk`.

Errors are :class:`vidgate.storage.s3.S3BlobStore`'s translation: unreachable or 5xx ->
StorageUnavailable (503), the upload stays resumable.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from vidgate.errors import StorageUnavailable, VidgateError
from vidgate.hashing import Hasher
from vidgate.storage.base import BlobStore, check_hash
from vidgate.storage.s3 import ObjectFile, S3BlobStore

log = logging.getLogger(__name__)

MIB = 1 << 20
MIN_PART = 5 * MIB  # S3's smallest part (but the last)
MAX_PARTS = 10_000
MAX_COPY = 5 << 30  # the most one CopyObject / UploadPartCopy copies
READ_CHUNK = MIB
INCOMPLETE, CHUNK, STAGED = "incomplete", "chunk", "staged"


class UploadIds(Protocol):
    """Where each upload's multipart UploadId is kept (:class:`vidgate.db.upload_ids.SessionUploadIds`)."""

    def get(self, key: str) -> str | None: ...

    def claim(self, key: str, upload_id: str) -> str:
        """Record ``upload_id`` for ``key`` unless one is recorded; return the one recorded."""
        ...

    def forget(self, key: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Part:
    number: int
    etag: str
    size: int


class Spool:
    """A local temporary file (gone when closed) that a part's bytes are gathered in."""

    def __init__(self, directory: Path) -> None:
        self.file = tempfile.TemporaryFile(dir=directory, buffering=0)  # noqa: SIM115 - closed by close()
        self.size = 0

    def write(self, views: Sequence[memoryview]) -> None:
        pending = [view for view in views if len(view)]
        fd = self.file.fileno()
        while pending:
            written = os.writev(fd, pending[:512])
            self.size += written
            while pending and written >= len(pending[0]):
                written -= len(pending[0])
                pending.pop(0)
            if pending and written:
                pending[0] = pending[0][written:]

    def body(self) -> Any:
        self.file.seek(0)
        return self.file

    def close(self) -> None:
        self.file.close()


def committed_parts(parts: dict[int, Part], offset: int) -> tuple[list[Part], int]:
    """The parts ``1..m`` that lie wholly before ``offset`` (a part that would reach past it
    was sent by a request that was not recorded), and the bytes they hold."""
    committed: list[Part] = []
    done = 0
    number = 1
    while (part := parts.get(number)) is not None and done + part.size <= offset:
        committed.append(part)
        done += part.size
        number += 1
    if offset - done >= MIN_PART:
        raise VidgateError(
            f"The upload's parts in the bucket hold {done} bytes, short of its offset {offset}: data was lost."
        )
    return committed, done


def _take(views: list[memoryview], room: int) -> tuple[list[memoryview], list[memoryview]]:
    """Split ``views`` after ``room`` bytes."""
    taken: list[memoryview] = []
    rest = list(views)
    while rest and room > 0:
        view = rest[0]
        if len(view) > room:
            taken.append(view[:room])
            rest[0] = view[room:]
            room = 0
        else:
            taken.append(rest.pop(0))
            room -= len(view)
    return taken, rest


class Tails:
    """What this process's last flush of each upload left committed in the bucket: the end offset
    and how many parts ``1..m`` before it hold how many bytes (the rest, under 5 MiB, is the
    incomplete object): two numbers per upload, whatever its parts. The next request of an upload
    starts at the offset the database recorded; when that is the end noted here, those are its
    committed parts, without a ListParts: offsets only grow, so another host (or a
    request whose recording failed) cannot have changed the committed parts and left the offset
    where it was; a part such a request sent beyond them is ignored as ListParts' would be (see
    :func:`committed_parts`) and overwritten."""

    def __init__(self, limit: int = 10_000) -> None:
        self._tails: OrderedDict[str, tuple[str, int, int, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.limit = limit

    def note(self, key: str, upload_id: str, end: int, parts: int, done: int) -> None:
        """``parts`` parts hold ``done`` bytes of the ``end`` recorded."""
        with self._lock:
            self._tails[key] = (upload_id, end, parts, done)
            self._tails.move_to_end(key)
            while len(self._tails) > self.limit:
                self._tails.popitem(last=False)

    def at(self, key: str, upload_id: str, offset: int) -> tuple[int, int] | None:
        """How many committed parts hold how many bytes, if this process's last recorded flush of
        ``key`` ended at ``offset``."""
        with self._lock:
            noted = self._tails.get(key)
        if noted is None or noted[0] != upload_id or noted[1] != offset:
            return None
        return noted[2], noted[3]

    def forget(self, key: str) -> None:
        with self._lock:
            self._tails.pop(key, None)


class _Sender:
    """One writer's parts on their way to S3 (at most ``limit`` at once, each its own spool)."""

    def __init__(self, store: S3PartStore, key: str, upload_id: str) -> None:
        self.store, self.key, self.upload_id = store, key, upload_id
        self.inflight: deque[Future[Part]] = deque()
        self.sent: list[Part] = []

    def send(self, number: int, spool: Spool) -> None:
        try:
            while len(self.inflight) >= self.store.concurrency:
                self.sent.append(self.inflight.popleft().result())
        except BaseException:
            spool.close()
            raise
        self.inflight.append(self.store.pool.submit(self.store.upload_part, self.key, self.upload_id, number, spool))

    def wait(self) -> list[Part]:
        error: BaseException | None = None
        while self.inflight:
            try:
                self.sent.append(self.inflight.popleft().result())
            except BaseException as exc:  # wait for every part before raising the first error
                error = error or exc
        if error is not None:
            raise error
        return self.sent

    def drain(self) -> None:
        with contextlib.suppress(BaseException):
            self.wait()


class AppendWriter:
    """A :class:`~vidgate.storage.parts.PartWriter` appending at the upload's committed offset
    (tus, a one-chunk seed upload): parts while the bytes arrive, the rest at :meth:`flush`."""

    def __init__(self, store: S3PartStore, key: str, upload_id: str) -> None:
        self.store, self.key, self.upload_id = store, key, upload_id
        self.sender = _Sender(store, key, upload_id)
        self.start: int | None = None
        self.end = 0
        self.number = 1  # the part the spool becomes
        self.spool: Spool | None = None
        self.done = 0  # the bytes the committed parts before ``start`` hold
        self.tail: tuple[int, int] | None = None  # after flush: parts and their bytes once recorded

    def _begin(self, offset: int) -> None:
        known = self.store.tails.at(self.key, self.upload_id, offset)
        if known is not None:
            count, done = known
        else:
            committed, done = committed_parts(self.store.list_parts(self.key, self.upload_id), offset)
            count = len(committed)
        self.done = done
        self.number = count + 1
        self.start = self.end = offset
        self.spool = Spool(self.store.spool_dir)
        if offset > done:  # the committed rest, kept as the incomplete part: prepended
            self.store.read_into(
                self.spool, self.store.piece_key(self.key, INCOMPLETE, str(self.number)), 0, offset - done
            )

    def write_at(self, views: Sequence[memoryview], position: int) -> int:
        if self.start is None:
            self._begin(position)
        if position != self.end:
            raise VidgateError(
                f"S3 writer of {self.key} asked to write at {position}, not where it stands ({self.end})"
            )
        assert self.spool is not None
        pending = list(views)
        total = sum(len(view) for view in pending)
        while pending:
            taken, pending = _take(pending, self.store.part_size - self.spool.size)
            self.spool.write(taken)
            if self.spool.size >= self.store.part_size:
                self._send()
        self.end += total
        return total

    def _send(self) -> None:
        assert self.spool is not None
        if self.number > MAX_PARTS:
            raise VidgateError(f"The upload needs more than {MAX_PARTS} parts; raise STORAGE_S3_PART_SIZE.")
        spool, self.spool = self.spool, Spool(self.store.spool_dir)
        self.sender.send(self.number, spool)
        self.number += 1

    def flush(self) -> None:
        if self.spool is None:
            return
        if self.spool.size >= MIN_PART:
            self._send()
        self.store.tails.forget(self.key)  # the parts are changing
        sent = self.sender.wait()
        spool, self.spool = self.spool, None
        try:
            if spool.size:
                self.store.put_spool(self.store.piece_key(self.key, INCOMPLETE, str(self.number)), spool)
        finally:
            spool.close()
        self.tail = (self.number - 1, self.done + sum(part.size for part in sent))

    def sync(self) -> None:
        return None  # durable once flushed: S3 acknowledged it

    def recorded(self) -> None:
        """Only now: had the recording failed, another host could take the request again with
        other part sizes (its STORAGE_S3_PART_SIZE) and reach the same offset."""
        if self.tail is not None:
            self.store.tails.note(self.key, self.upload_id, self.end, *self.tail)
            self.tail = None

    def close(self) -> None:
        self.sender.drain()  # before the lock is released: no late part may overwrite a later request's
        if self.spool is not None:
            self.spool.close()
            self.spool = None


class ChunkWriter:
    """A :class:`~vidgate.storage.parts.PartWriter` of one seed chunk: spooled locally, then at
    :meth:`flush` the part ``index + 1`` (5 MiB or more) or an object (smaller, or staged)."""

    def __init__(self, store: S3PartStore, key: str, upload_id: str | None, index: int, object_key: str | None = None):
        self.store, self.key, self.upload_id, self.index = store, key, upload_id, index
        self.object_key = object_key  # set: always this object (a staged chunk)
        self.start: int | None = None
        self.end = 0
        self.spool: Spool | None = None

    def write_at(self, views: Sequence[memoryview], position: int) -> int:
        if self.start is None:
            self.start = self.end = position
            self.spool = Spool(self.store.spool_dir)
        if position != self.end or self.spool is None:
            raise VidgateError(f"S3 chunk writer of {self.key} asked to write at {position}, not at {self.end}")
        self.spool.write(views)
        total = sum(len(view) for view in views)
        self.end += total
        return total

    def flush(self) -> None:
        spool, self.spool = self.spool, None
        if spool is None:
            return
        try:
            if self.object_key is not None:
                self.store.put_spool(self.object_key, spool)
            elif spool.size >= MIN_PART and self.index < MAX_PARTS and self.upload_id is not None:
                self.store.upload_part(self.key, self.upload_id, self.index + 1, spool)
            else:
                self.store.put_spool(self.store.piece_key(self.key, CHUNK, str(self.index)), spool)
        finally:
            spool.close()

    def sync(self) -> None:
        return None

    def recorded(self) -> None:
        return None

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None


class _Builder:
    """Bytes read back in order, sent as the parts of ``upload_id`` and completed."""

    def __init__(self, store: S3PartStore, key: str, upload_id: str) -> None:
        self.store, self.key, self.upload_id = store, key, upload_id
        self.sender = _Sender(store, key, upload_id)
        self.spool = Spool(store.spool_dir)
        self.number = 1

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while len(view):
            room = self.store.part_size - self.spool.size
            self.spool.write([view[:room]])
            view = view[room:]
            if self.spool.size >= self.store.part_size:
                spool, self.spool = self.spool, Spool(self.store.spool_dir)
                self.sender.send(self.number, spool)
                self.number += 1

    def finish(self) -> None:
        try:
            if self.spool.size:
                spool, self.spool = self.spool, Spool(self.store.spool_dir)
                self.sender.send(self.number, spool)
            parts = self.sender.wait()
        finally:
            self.sender.drain()
            self.spool.close()
        self.store.complete_upload(self.key, self.upload_id, [(part.number, part.etag) for part in parts])

    def abandon(self) -> None:
        self.sender.drain()
        self.spool.close()


class S3PartStore:
    """:class:`~vidgate.storage.parts.PartStore` in the bucket of ``blobs`` (see the module's docstring)."""

    def __init__(
        self,
        blobs: S3BlobStore,
        upload_ids: UploadIds,
        local_dir: Path,
        *,
        max_file_size: int,
    ) -> None:
        self.blobs = blobs
        self.client = blobs.client
        self.bucket = blobs.bucket
        self.prefix = blobs.prefix
        self.upload_ids = upload_ids
        self.part_size = blobs.part_size_for(max_file_size)
        self.concurrency = blobs.settings.s3_concurrency
        self.pool = ThreadPoolExecutor(max_workers=max(4, 4 * self.concurrency), thread_name_prefix="s3-part")
        self.spool_dir = local_dir / "s3-spool"
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._ids: OrderedDict[str, str] = OrderedDict()
        self._ids_lock = threading.Lock()
        self.tails = Tails()
        #: uploads whose content was stored already when their hash became known: ``key ->
        #: (content hash, size)``; validated from that blob, never completed nor copied
        self._adopted: dict[str, tuple[str, int]] = {}

    # ------------------------------------------------------------------ keys
    @property
    def uploads_prefix(self) -> str:
        return f"{self.prefix}uploads/"

    def staging_key(self, key: str) -> str:
        """The object the upload completes into (and the key of its multipart upload)."""
        return f"{self.uploads_prefix}{key}"

    def piece_key(self, key: str, kind: str, name: str) -> str:
        return f"{self.uploads_prefix}{key}/{kind}/{name}"

    def _url(self, object_key: str) -> str:
        return f"s3://{self.bucket}/{object_key}"

    def location(self, key: str) -> str:
        return self._url(self.staging_key(key))

    # ------------------------------------------------------------------ S3 requests
    def _translated(self, what: str) -> contextlib.AbstractContextManager[None]:
        return self.blobs.translated(what)

    def _object_size(self, object_key: str) -> int | None:
        try:
            with self._translated(f"HEAD {object_key}"):
                return int(self.client.head_object(Bucket=self.bucket, Key=object_key)["ContentLength"])
        except FileNotFoundError:
            return None

    def upload_id(self, key: str, *, create: bool = True) -> str | None:
        """The UploadId of ``key``'s multipart upload; created (and recorded) if it has none."""
        with self._ids_lock:
            known = self._ids.get(key)
        if known is None:
            known = self.upload_ids.get(key)
        if known is None and create:
            with self._translated(f"CreateMultipartUpload {self.staging_key(key)}"):
                made = self.client.create_multipart_upload(
                    Bucket=self.bucket, Key=self.staging_key(key), ContentType="application/octet-stream"
                )["UploadId"]
            known = self.upload_ids.claim(key, made)
            if known != made:  # another host made one at the same moment and recorded it first
                self._abort(key, made)
        if known is not None:
            with self._ids_lock:
                self._ids[key] = known
                self._ids.move_to_end(key)
                while len(self._ids) > 10_000:
                    self._ids.popitem(last=False)
        return known

    def _forget_id(self, key: str) -> None:
        with self._ids_lock:
            self._ids.pop(key, None)
        self.tails.forget(key)

    def _abort(self, key: str, upload_id: str) -> None:
        with contextlib.suppress(FileNotFoundError), self._translated(f"AbortMultipartUpload {key}"):
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.staging_key(key), UploadId=upload_id)

    def upload_part(self, key: str, upload_id: str, number: int, spool: Spool) -> Part:
        try:
            with self._translated(f"UploadPart {number} of {self.staging_key(key)}"):
                answer = self.client.upload_part(
                    Bucket=self.bucket,
                    Key=self.staging_key(key),
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=spool.body(),
                    ContentLength=spool.size,
                )
        except FileNotFoundError as exc:  # NoSuchUpload: removed meanwhile (another host gave up on it)
            self._forget_id(key)
            raise VidgateError("The upload's data in the bucket was removed meanwhile; send this part again.") from exc
        finally:
            spool.close()
        return Part(number, str(answer["ETag"]), spool.size)

    def put_spool(self, object_key: str, spool: Spool) -> None:
        with self._translated(f"PUT {object_key}"):
            self.client.put_object(Bucket=self.bucket, Key=object_key, Body=spool.body(), ContentLength=spool.size)

    def list_parts(self, key: str, upload_id: str) -> dict[int, Part]:
        parts: dict[int, Part] = {}
        marker = 0
        while True:
            try:
                with self._translated(f"ListParts {self.staging_key(key)}"):
                    more = {"PartNumberMarker": marker} if marker else {}
                    page = self.client.list_parts(
                        Bucket=self.bucket, Key=self.staging_key(key), UploadId=upload_id, **more
                    )
            except FileNotFoundError as exc:
                self._forget_id(key)
                raise VidgateError("The upload's multipart upload is gone from the bucket.") from exc
            for item in page.get("Parts", []):
                parts[int(item["PartNumber"])] = Part(int(item["PartNumber"]), str(item["ETag"]), int(item["Size"]))
            if not page.get("IsTruncated"):
                return parts
            marker = int(page["NextPartNumberMarker"])

    def _pieces(self, key: str) -> dict[str, int]:
        """The upload's objects beside its multipart upload, ``kind/name -> size``."""
        start = f"{self.staging_key(key)}/"
        return {object_key[len(start) :]: size for object_key, size, _ in self._listing(start)}

    def _listing(self, prefix: str) -> Iterator[tuple[str, int, float]]:
        with self._translated(f"listing of {prefix}*"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield item["Key"], int(item["Size"]), item["LastModified"].timestamp()

    def _stream(self, object_key: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``[start, end)`` of an object, in chunks (the blob store's ranged-GET loop)."""
        return self.blobs.stream_object(object_key, start, end, READ_CHUNK)

    def read_into(self, spool: Spool, object_key: str, start: int, end: int) -> None:
        try:
            for data in self._stream(object_key, start, end):
                spool.write([memoryview(data)])
        except FileNotFoundError as exc:
            raise VidgateError(f"{object_key}, the upload's committed rest, is gone from the bucket.") from exc

    def _copy_part(self, key: str, upload_id: str, number: int, source: str, start: int, end: int) -> str:
        with self._translated(f"UploadPartCopy {source} to part {number} of {self.staging_key(key)}"):
            answer = self.client.upload_part_copy(
                Bucket=self.bucket,
                Key=self.staging_key(key),
                UploadId=upload_id,
                PartNumber=number,
                CopySource={"Bucket": self.bucket, "Key": source},
                CopySourceRange=f"bytes={start}-{end - 1}",
            )
        return str(answer["CopyPartResult"]["ETag"])

    def complete_upload(self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]) -> None:
        if not parts:  # nothing was sent: an empty file
            self._abort(key, upload_id)
            self.create_empty(key)
            return
        staging = self.staging_key(key)
        try:
            with self._translated(f"CompleteMultipartUpload {staging}"):
                self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=staging,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etag} for n, etag in parts]},
                )
        except FileNotFoundError as exc:  # completed already (an answer lost on the way)?
            if self._object_size(staging) is None:
                raise VidgateError(f"The multipart upload of {staging} is gone and nothing was completed.") from exc

    # ------------------------------------------------------------------ the PartStore interface
    def open_part(
        self, key: str, *, reserve: int | None = None, chunk_index: int | None = None
    ) -> AppendWriter | ChunkWriter:
        upload_id = self.upload_id(key)
        assert upload_id is not None
        if chunk_index is None:
            return AppendWriter(self, key, upload_id)
        return ChunkWriter(self, key, upload_id, chunk_index)

    def stage(self, key: str, name: str) -> tuple[str, ChunkWriter]:
        object_key = self.piece_key(key, STAGED, name)
        return self._url(object_key), ChunkWriter(self, key, None, -1, object_key=object_key)

    def discard_staged(self, location: str) -> None:
        """Best effort, as :meth:`remove`: a staged chunk left behind goes with its upload."""
        object_key = location.removeprefix(f"s3://{self.bucket}/")
        try:
            with self._translated(f"DELETE {object_key}"):
                self.client.delete_object(Bucket=self.bucket, Key=object_key)
        except StorageUnavailable as exc:
            log.warning("could not delete the staged chunk %s (it goes with its upload): %s", object_key, exc)

    def exists(self, key: str) -> bool:
        return self._object_size(self.staging_key(key)) is not None or self.upload_id(key, create=False) is not None

    def create_empty(self, key: str) -> None:
        with self._translated(f"PUT {self.staging_key(key)}"):
            self.client.put_object(Bucket=self.bucket, Key=self.staging_key(key), Body=b"")

    def assemble(
        self,
        key: str,
        staged: Sequence[tuple[str, int, int]],
        size: int,
        hasher: Hasher,
        hashed_upto: int,
        *,
        fsync: bool,
    ) -> None:
        """Complete the multipart upload into the staging key (unless a run before this one
        did), then hash what the running hash has not seen, by ranged GETs."""
        staging = self.staging_key(key)
        if self._object_size(staging) != size:
            hashed_upto = self._complete(key, size, hasher, hashed_upto)
        for data in self._stream(staging, hashed_upto, size):
            hasher.update(data)

    def _complete(self, key: str, size: int, hasher: Hasher | None, hashed_upto: int) -> int:
        """Make the staging object; return how far ``hasher`` got (it is fed when bytes are read back)."""
        upload_id = self.upload_id(key, create=False)
        if size == 0:
            if upload_id is not None:
                self._abort(key, upload_id)
            self.create_empty(key)
            return hashed_upto
        pieces = self._pieces(key)
        if any(name.startswith((f"{CHUNK}/", f"{STAGED}/")) for name in pieces):
            return self._complete_chunks(key, upload_id or self.upload_id(key) or "", pieces, size, hasher, hashed_upto)
        if upload_id is None:
            raise VidgateError(f"Upload {key} has no multipart upload in the bucket: its data was lost.")
        committed, done = committed_parts(self.list_parts(key, upload_id), size)
        parts = [(part.number, part.etag) for part in committed]
        if size > done:  # the rest, in the incomplete part: the last part, which may be small
            number = len(committed) + 1
            name = f"{INCOMPLETE}/{number}"
            if pieces.get(name, 0) < size - done:
                raise VidgateError(f"The last {size - done} bytes of upload {key} are missing from the bucket.")
            source = self.piece_key(key, INCOMPLETE, str(number))
            parts.append((number, self._copy_part(key, upload_id, number, source, 0, size - done)))
        self.complete_upload(key, upload_id, parts)
        return hashed_upto

    def _complete_chunks(
        self, key: str, upload_id: str, pieces: dict[str, int], size: int, hasher: Hasher | None, hashed_upto: int
    ) -> int:
        """Seed chunks: part ``i + 1`` or an object per chunk ``i``, checked against the sizes."""
        parts = self.list_parts(key, upload_id)

        def candidates(index: int) -> list[tuple[str | None, int, str]]:
            """``(object key or None for the part, size, etag)`` of what holds chunk ``index``."""
            found: list[tuple[str | None, int, str]] = []
            if (part := parts.get(index + 1)) is not None:
                found.append((None, part.size, part.etag))
            for kind, name in ((CHUNK, str(index)), (STAGED, f"{index}.chunk")):
                if f"{kind}/{name}" in pieces:
                    found.append((self.piece_key(key, kind, name), pieces[f"{kind}/{name}"], ""))
            return found

        first = candidates(0)
        if not first or not first[0][1]:
            raise VidgateError(f"Chunk 0 of upload {key} is missing from the bucket.")
        chunk_size = first[0][1]
        count = math.ceil(size / chunk_size)
        chosen: list[tuple[str | None, int, str]] = []
        for index in range(count):
            wanted = chunk_size if index < count - 1 else size - (count - 1) * chunk_size
            match = [c for c in candidates(index) if c[1] == wanted]
            if not match:
                raise VidgateError(f"Chunk {index} ({wanted} bytes) of upload {key} is missing from the bucket.")
            chosen.append(match[0])
        if chunk_size >= MIN_PART and count <= MAX_PARTS:  # every chunk a part; objects copied in server-side
            final: list[tuple[int, str]] = []
            for index, (source, length, etag) in enumerate(chosen):
                if source is not None:
                    etag = self._copy_part(key, upload_id, index + 1, source, 0, length)
                final.append((index + 1, etag))
            self.complete_upload(key, upload_id, final)
            return hashed_upto
        # chunks under 5 MiB: read back in order and sent as parts (hashed on the way)
        if any(source is None for source, _, _ in chosen):
            raise VidgateError(f"Upload {key} mixes parts with chunks under 5 MiB; it cannot be completed.")
        builder = _Builder(self, key, upload_id)
        position = 0
        try:
            for source, length, _ in chosen:
                assert source is not None
                for data in self._stream(source, 0, length):
                    builder.write(data)
                    if hasher is not None and position + len(data) > hashed_upto:
                        hasher.update(memoryview(data)[max(0, hashed_upto - position) :])
                    position += len(data)
        except BaseException:
            builder.abandon()
            raise
        builder.finish()
        return size if hasher is not None else hashed_upto

    def concatenate(self, key: str, sources: Sequence[tuple[str, int]]) -> None:
        """tus concatenation: each partial upload is completed in the bucket, then the final one
        is made of them by UploadPartCopy (server-side) when every one but the last has 5 MiB,
        else read back in order and sent as parts."""
        objects: list[tuple[str, int]] = []
        for source, size in sources:
            if size:
                if self._object_size(self.staging_key(source)) != size:
                    self._complete(source, size, None, 0)
                objects.append((self.staging_key(source), size))
        if not objects:
            self.create_empty(key)
            return
        with self._translated(f"CreateMultipartUpload {self.staging_key(key)}"):
            upload_id = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=self.staging_key(key), ContentType="application/octet-stream"
            )["UploadId"]
        try:
            if all(size >= MIN_PART for _, size in objects[:-1]) and all(size <= MAX_COPY for _, size in objects):
                parts = [
                    (number, self._copy_part(key, upload_id, number, source, 0, size))
                    for number, (source, size) in enumerate(objects, start=1)
                ]
                self.complete_upload(key, upload_id, parts)
                return
            builder = _Builder(self, key, upload_id)
            try:
                for source, size in objects:
                    for data in self._stream(source, 0, size):
                        builder.write(data)
            except BaseException:
                builder.abandon()
                raise
            builder.finish()
        except BaseException:
            with contextlib.suppress(VidgateError):
                self._abort(key, upload_id)
            raise

    def hash_range(self, key: str, hasher: Hasher, start: int, end: int) -> None:
        """Only the completed file can be read: S3 gives no part of a multipart upload back
        before it completes, so the running hash catches up at assembly instead."""
        staging = self.staging_key(key)
        if self._object_size(staging) is None:
            raise VidgateError(f"Upload {key} is not completed in the bucket; its parts cannot be read yet.")
        try:
            for data in self._stream(staging, start, end):
                hasher.update(data)
        except FileNotFoundError as exc:
            raise VidgateError(f"Upload {key} is gone from the bucket.") from exc

    def adopt(self, key: str, content_hash: str, size: int, blobs: BlobStore) -> bool:
        """When the content is in the bucket already (a known SHA-256 over every byte received,
        before assembly), leave the multipart upload incomplete: validation reads the stored
        blob (the same bytes), :meth:`store` copies nothing and :meth:`remove` aborts the upload
        (cheaper than completing it and deleting the result)."""
        if not size or not (isinstance(blobs, S3BlobStore) and blobs.bucket == self.bucket):
            return False
        if not blobs.exists(content_hash):
            return False
        with self._ids_lock:
            self._adopted[key] = (content_hash, size)
        return True

    def file_on_disk(self, key: str) -> None:
        return None  # the file is made in the bucket by CompleteMultipartUpload

    def assembled(self, key: str) -> ObjectFile:
        """The completed file (or the stored blob it was adopted as), read by ranged GETs: no
        local copy, nothing whole in memory."""
        with self._ids_lock:
            adopted = self._adopted.get(key)
        if adopted is not None:
            content_hash, size = adopted
            return self.blobs.object_file(self.blobs.object_key(content_hash), size)
        staging = self.staging_key(key)
        completed = self._object_size(staging)
        if completed is None:
            raise VidgateError(f"Upload {key} is not completed in the bucket.")
        return self.blobs.object_file(staging, completed)

    def store(self, key: str, content_hash: str, blobs: BlobStore) -> str:
        """The completed file becomes the blob ``content_hash`` by a server-side copy (none when
        the content is stored already). An adopted upload whose blob went away meanwhile (a
        delete of that content withdrew it) is completed now and copied after all: its parts
        are only aborted by :meth:`remove`, after the session's commit."""
        if not (isinstance(blobs, S3BlobStore) and blobs.bucket == self.bucket):
            raise VidgateError("Uploads in progress in a bucket are stored into that bucket's blob store only.")
        with self._ids_lock:
            adopted = self._adopted.pop(key, None)
        if adopted is not None:
            if blobs.exists(content_hash):
                return check_hash(content_hash)
            self._complete(key, adopted[1], None, adopted[1])
        return blobs.copy_in(content_hash, self.staging_key(key))

    def remove(self, key: str, *, later: bool = False) -> None:
        """Abort the key's multipart uploads and delete its objects (one DeleteObjects). An S3
        failure is logged, not raised: the upload has ended either way, and the orphan sweep
        finds what is left. ``later``: off the caller's path, in the background (a completed
        upload: its answer need not wait; a crash meanwhile leaves it to the sweep)."""
        self._forget_id(key)
        with self._ids_lock:
            self._adopted.pop(key, None)
        if later:
            self.pool.submit(self._remove_logged, key)
        else:
            self._remove(key)

    def _remove_logged(self, key: str) -> None:
        try:
            self._remove(key)
        except Exception:
            log.exception("removing upload %s from the bucket failed (the sweep will)", key)

    def _remove(self, key: str) -> None:
        staging = self.staging_key(key)
        started = time.perf_counter()
        try:
            recorded = self.upload_ids.get(key)
            ids = {recorded} if recorded else set()
            with self._translated(f"ListMultipartUploads {staging}"):
                pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=staging)
                ids.update(u["UploadId"] for page in pages for u in page.get("Uploads", []) if u["Key"] == staging)
            for upload_id in ids:
                self._abort(key, upload_id)
            self.delete_objects([object_key for object_key, _, _ in self._listing(f"{staging}/")] + [staging])
            self.upload_ids.forget(key)
        except StorageUnavailable as exc:
            log.warning("could not remove upload %s from the bucket (the sweep will): %s", key, exc)
            return
        log.debug("upload %s removed from the bucket in %.2f s", key, time.perf_counter() - started)

    def delete_objects(self, object_keys: Sequence[str]) -> None:
        """Delete objects with one DeleteObjects per 1000 (missing ones are no error)."""
        for first in range(0, len(object_keys), 1000):
            batch = [{"Key": object_key} for object_key in object_keys[first : first + 1000]]
            with self._translated(f"DeleteObjects {batch[0]['Key']} ..."):
                answer = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            failed = [e for e in answer.get("Errors", []) if e.get("Code") not in ("NoSuchKey", "404")]
            if failed:
                raise StorageUnavailable(f"The object store did not delete {len(failed)} objects: {failed[0]}")

    def upload_ids_on_disk(self) -> Iterator[tuple[str, float]]:
        """Every key with a multipart upload or an object in the bucket, with its latest time."""
        latest: dict[str, float] = {}

        def seen(object_key: str, when: float) -> None:
            key = object_key[len(self.uploads_prefix) :].split("/", 1)[0]
            if key:
                latest[key] = max(when, latest.get(key, 0.0))

        try:
            with self._translated(f"ListMultipartUploads {self.uploads_prefix}"):
                pages = self.client.get_paginator("list_multipart_uploads").paginate(
                    Bucket=self.bucket, Prefix=self.uploads_prefix
                )
                for page in pages:
                    for upload in page.get("Uploads", []):
                        seen(upload["Key"], upload["Initiated"].timestamp())
            for object_key, _, when in self._listing(self.uploads_prefix):
                seen(object_key, when)
        except StorageUnavailable as exc:  # the sweep comes again; the rest of it need not wait for S3
            log.warning("orphan sweep of the bucket skipped: %s", exc)
            latest.clear()
        yield from latest.items()

    def close(self) -> None:
        self.pool.shutdown(wait=False)
