"""The storage interface the upload flow depends on."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

_DERIVED_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


def check_hash(key: str) -> str:
    """``key`` if it is a SHA-256 in lowercase hex (every store's blob key), else ValueError."""
    if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
        raise ValueError(f"not a SHA-256 key: {key!r}")
    return key


def check_derived_name(name: str) -> str:
    """``name`` if it can name a derived file (poster.jpg ...), else ValueError."""
    if not _DERIVED_NAME.fullmatch(name):
        raise ValueError(f"not a derived file name: {name!r}")
    return name


class RangedReader(Protocol):
    """A reader of a :class:`RangedFile`: ``pread`` at any offset, ``read`` on from the position."""

    def pread(self, length: int, offset: int, /) -> bytes:
        """Up to ``length`` bytes from ``offset`` (fewer only at the end), as ``os.pread``."""
        ...

    def read(self, size: int = -1, /) -> bytes | None: ...

    def close(self) -> None: ...


class RangedFile(Protocol):
    """A file that is read by ranges where it is (an object in a bucket), never downloaded:
    what validation reads when the assembled file is not on local disk."""

    name: str
    size: int

    def reader(self, window: int | None = None) -> RangedReader:
        """A new reader fetching ``window`` bytes per request (small: scattered reads such as a
        structure walk), or by default bigger windows of one streamed read (sequential reads)."""
        ...


class BlobStore(Protocol):
    """Finished files, addressed by their SHA-256 (so each content is stored once).

    Keys are the same in every store: ``<sha256>`` for a stored file, ``<sha256>/<name>`` for a
    file derived from it (:meth:`derived_key`); the database keeps them, whatever the backend.
    A missing key raises FileNotFoundError (``open``, ``size``, ``read_range``); a store that
    cannot be reached raises :class:`vidgate.errors.StorageUnavailable`."""

    def put_file(self, content_hash: str, source: Path) -> str:
        """Move ``source`` in as ``content_hash`` and return its key. If the content is already
        stored, ``source`` is removed and the existing key returned."""
        ...

    def exists(self, content_hash: str) -> bool: ...

    def open(self, key: str) -> BinaryIO: ...

    def size(self, key: str) -> int: ...

    def delete(self, key: str) -> None: ...

    def withdraw(self, key: str) -> bool:
        """Move the blob ``key`` out of reach, kept aside until :meth:`restore` or
        :meth:`purge_withdrawn`: a :meth:`put_file` of the same bytes meanwhile stores its own
        copy instead of trusting this one (the library deletes a content race-free this way).
        False if there was no such blob."""
        ...

    def restore(self, key: str) -> None:
        """Put a withdrawn blob back (dropped instead if a new copy was stored meanwhile)."""
        ...

    def purge_withdrawn(self, key: str) -> None:
        """Remove a withdrawn blob for good."""
        ...

    def withdrawn(self) -> Iterator[tuple[str, float]]:
        """Every withdrawn key and when it was withdrawn (Unix time): what a crash left aside."""
        ...

    def local_path(self, key: str) -> Path | None:
        """The file of ``key`` on local disk, when the store keeps it there: the API then serves
        it with the OS's file reads (Range included); None (a remote store) means
        :meth:`read_range`."""
        ...

    def read_range(self, key: str, start: int, end: int, chunk_size: int = 256 * 1024) -> Iterator[bytes]:
        """Bytes ``start`` to ``end`` (exclusive) of ``key``, in chunks of at most ``chunk_size``
        (a remote store asks for exactly that range: never the whole object)."""
        ...

    def put_derived(self, content_hash: str, name: str, source: Path) -> str:
        """Move ``source`` in as the derived file ``name`` (poster.jpg ...) of ``content_hash``,
        replacing an older one; return its key. Derived files belong to the content, so every
        owner of the same bytes shares them."""
        ...

    def derived_key(self, content_hash: str, name: str) -> str: ...

    def delete_derived(self, content_hash: str) -> None:
        """Remove every derived file of ``content_hash``."""
        ...

    def check(self) -> None:
        """Raise if the store cannot be used (used by readiness checks and at start-up)."""
        ...

    def scratch_dir(self) -> Path | None:
        """Where to write files meant for :meth:`put_derived` so that it can rename them in
        (the store's own filesystem); None: anywhere (the system's temporary directory)."""
        ...

    def derived_files(self) -> Iterator[tuple[str, float]]:
        """Every derived file's key (``<sha256>/<name>``) and when it was put (Unix time), in key
        order (so a content's files come together): what the library's sweep holds against the
        database, to remove pictures whose content has no row any more."""
        ...
