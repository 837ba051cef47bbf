"""The part-store interface: where the bytes of an upload in progress live until it completes.

The upload flow touches part storage only through :class:`PartStore` and the
:class:`PartWriter` it hands out, as tusd's handler touches a data store only through
``Upload.WriteChunk(ctx, offset, src)``: the handler decides locking, offsets and limits; the
store only places bytes. Every method raises :class:`vidgate.errors.VidgateError` (a full disk:
``InsufficientStorage``), never ``OSError``: an implementation translates its own errors in
one place (the local one: :func:`vidgate.storage.local.storage_errors`).

``key`` is the upload's row id (``upload_session.id``): never shown to clients, so it is safe
in paths and object names.

What an implementation must provide, and what a remote one (S3 multipart) may do instead:

- :meth:`PartStore.open_part` hands out a writer for the part of ``key``; its
  :meth:`PartWriter.write_at` writes at a byte offset of the finished file. The seed API writes
  a chunk at ``index * chunk_size`` (chunks may come in any order, several at once, each
  through its own writer, told its ``chunk_index``); tus appends at the upload's offset. A
  multipart store (:mod:`vidgate.storage.s3_parts`) maps a chunk to the part
  ``chunk_index + 1`` and appended bytes to parts after the committed ones, and sends them at
  the latest in :meth:`PartWriter.flush`; a writer is only ever asked to continue where its
  own previous write ended.
- :meth:`PartStore.stage` keeps a chunk whose offset is not known yet (its chunk size is learnt
  from chunk 0) and :meth:`PartStore.assemble` places it when the file is complete.
- :meth:`PartStore.assemble` and :meth:`PartStore.concatenate` make the whole file; after
  them :meth:`PartStore.assembled` gives it to validation (a local file, or a remote store's
  object read by ranges, never downloaded) and :meth:`PartStore.store` moves it into the blob
  store (a remote store copies it there server-side). :meth:`PartStore.adopt` lets a remote
  store skip both when the content is stored already.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

from vidgate.hashing import Hasher
from vidgate.storage.base import BlobStore, RangedFile


class PartWriter(Protocol):
    """One request's way into a part: bytes at offsets, then sync and close."""

    def write_at(self, views: Sequence[memoryview], position: int) -> int:
        """Write ``views`` one after another from byte ``position``; return how many bytes were
        written (fewer than offered is a short write: the caller continues from there)."""
        ...

    def flush(self) -> None:
        """Hand everything written to the store, once, when the stream ended and before its bytes
        are recorded (the local store: nothing to do; S3: the last part or rest goes up here)."""
        ...

    def sync(self) -> None:
        """Make what was written durable (UPLOAD_FSYNC). The one exception to the rule above:
        the local store lets its ``OSError`` through, as the upload flow always did (a 500)."""
        ...

    def recorded(self) -> None:
        """The request's bytes are on record (the database has its new offset), after
        :meth:`flush`; never called for a request that failed. Raises nothing (S3: notes where
        the upload's committed parts end, so the next request needs no ListParts)."""
        ...

    def close(self) -> None:
        """Release the writer; safe to call twice."""
        ...


class PartStore(Protocol):
    def open_part(self, key: str, *, reserve: int | None = None, chunk_index: int | None = None) -> PartWriter:
        """A writer into the part of ``key`` (created if new). ``reserve``: bytes the whole file
        will take, reserved up front where the store can, so a full disk shows on the first
        chunk rather than in the middle of one. ``chunk_index``: the writer takes exactly the
        seed chunk of that index (a multipart store makes it the part ``chunk_index + 1``);
        None: bytes appended at the upload's offset (tus, a one-chunk upload)."""
        ...

    def stage(self, key: str, name: str) -> tuple[str, PartWriter]:
        """A writer for a chunk whose offset is not known yet, written from 0, and where it is
        kept (the chunk row records it until :meth:`assemble` places it)."""
        ...

    def discard_staged(self, location: str) -> None:
        """Drop a staged chunk that broke off (nothing if it is already gone)."""
        ...

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
        """Make the part of ``key`` the whole file: place each staged ``(location, offset,
        size)``, cut it to ``size`` bytes and feed ``hasher`` (which has seen the first
        ``hashed_upto`` bytes) the rest of it. Safe to run again after a crash."""
        ...

    def concatenate(self, key: str, sources: Sequence[tuple[str, int]]) -> None:
        """Make the part of ``key`` from the parts ``(source key, size)``, in that order."""
        ...

    def store(self, key: str, content_hash: str, blobs: BlobStore) -> str:
        """Move the assembled file of ``key`` into ``blobs`` as ``content_hash`` and return its
        key (the local store: ``put_file`` of the part file; S3: a server-side copy)."""
        ...

    def exists(self, key: str) -> bool: ...

    def create_empty(self, key: str) -> None:
        """An empty part (a zero-byte upload still goes through validation, which refuses it)."""
        ...

    def location(self, key: str) -> str:
        """Where the part of ``key`` is, as chunk rows record it."""
        ...

    def adopt(self, key: str, content_hash: str, size: int, blobs: BlobStore) -> bool:
        """Before :meth:`assemble`, when the SHA-256 of every byte received is known: True if
        the store will not assemble this upload because ``blobs`` holds that content already
        (:meth:`assembled` then gives the stored blob, :meth:`store` copies nothing and
        :meth:`remove` drops the upload's data). A store whose assembly costs nothing (local
        disk) answers False."""
        ...

    def assembled(self, key: str) -> Path | RangedFile:
        """The assembled file, for validation: a local file, or an object read by ranges."""
        ...

    def file_on_disk(self, key: str) -> Path | None:
        """The part of ``key`` as a file on this host's disk, when it is the finished file as soon
        as every byte is in (assembly then only cuts it to size): what the probe may read before
        the upload is recorded. None where assembly makes the file (a multipart upload). Makes no
        request and does not check that the file exists."""
        ...

    def hash_range(self, key: str, hasher: Hasher, start: int, end: int) -> None:
        """Feed bytes ``[start, end)`` of the part of ``key`` into ``hasher`` (the running file
        hash catching up over chunks that came ahead of it; a remote store reads them back with
        ranged GETs). A part that is gone or short raises, as every method does."""
        ...

    def remove(self, key: str, *, later: bool = False) -> None:
        """Delete everything of one upload (its part and staged chunks). ``later``: the upload
        completed, so a store whose removal costs requests may do it in the background (what a
        crash leaves is the orphan sweep's)."""
        ...

    def upload_ids_on_disk(self) -> Iterator[tuple[str, float]]:
        """Every key that has stored data, with its last change time (the orphan sweep)."""
        ...
