"""Local-disk storage: the part area for uploads in progress and the default blob store."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from vidgate.errors import InsufficientStorage, VidgateError
from vidgate.hashing import Hasher, update_from_fd
from vidgate.storage.base import BlobStore, check_derived_name
from vidgate.storage.discard import discarder_for


def translate_os_error(exc: OSError) -> VidgateError:
    """Map disk errors to domain errors at the storage boundary."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage("The server's storage is full; the upload can be resumed later.")
    return VidgateError(f"storage error: {exc.strerror or exc}")


class storage_errors:  # noqa: N801 - used as ``with storage_errors():``, like httpx's map_httpcore_exceptions
    """The one place the part store's ``OSError`` becomes a domain error (see :func:`translate_os_error`).

    A class rather than a generator context manager: it wraps every write call of the byte path."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if isinstance(exc, OSError):
            raise translate_os_error(exc) from exc


class PartFile:
    """A :class:`~vidgate.storage.parts.PartWriter` over an open file descriptor."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    def write_at(self, views: Sequence[memoryview], position: int) -> int:
        assert self.fd is not None
        with storage_errors():
            return os.pwritev(self.fd, views, position)

    def flush(self) -> None:
        return None  # written straight into the part file

    def sync(self) -> None:
        if self.fd is not None:
            os.fdatasync(self.fd)  # untranslated, as before the part store had an interface (a 500)

    def recorded(self) -> None:
        return None

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


DISCARD_FOLDER = "discarding"  # beside parts/ and blobs/: on their filesystem, so discarding is a rename


class LocalPartStore:
    """:class:`~vidgate.storage.parts.PartStore` on local disk: part files
    (``parts/<key>.part``) written at their offsets, and a staging area (``staging/<key>/``)
    for the rare chunk whose offset is not yet known."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.parts_dir = root / "parts"
        self.staging_dir = root / "staging"
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        self.discarder = discarder_for(root / DISCARD_FOLDER)

    def part_path(self, key: str) -> Path:
        return self.parts_dir / f"{key}.part"

    def location(self, key: str) -> str:
        return str(self.part_path(key))

    def staging_path(self, key: str, name: str) -> Path:
        directory = self.staging_dir / key
        directory.mkdir(parents=True, exist_ok=True)
        return directory / name

    def open_part(self, key: str, *, reserve: int | None = None, chunk_index: int | None = None) -> PartFile:
        path = self.part_path(key)
        with storage_errors():
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if reserve:
            try:
                os.posix_fallocate(fd, 0, reserve)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise translate_os_error(exc) from exc
                with storage_errors():
                    fd = os.open(path, os.O_RDWR)
        return PartFile(fd)

    def stage(self, key: str, name: str) -> tuple[str, PartFile]:
        path = self.staging_path(key, name)
        with storage_errors():
            return str(path), PartFile(os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600))

    def discard_staged(self, location: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            Path(location).unlink()

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
        with storage_errors():
            fd = os.open(self.part_path(key), os.O_RDWR)
            try:
                for location, offset, length in staged:
                    _place(Path(location), fd, offset, length)
                os.ftruncate(fd, size)
                update_from_fd(hasher, fd, hashed_upto, size)
                if fsync:
                    os.fdatasync(fd)
            finally:
                os.close(fd)

    def concatenate(self, key: str, sources: Sequence[tuple[str, int]]) -> None:
        total = sum(size for _, size in sources)
        part = self.open_part(key, reserve=total or None)
        assert part.fd is not None
        try:
            offset = 0
            with storage_errors():
                for source, size in sources:
                    _place(self.part_path(source), part.fd, offset, size)
                    offset += size
        finally:
            part.close()

    def hash_range(self, key: str, hasher: Hasher, start: int, end: int) -> None:
        with storage_errors():
            fd = os.open(self.part_path(key), os.O_RDONLY)
            try:
                update_from_fd(hasher, fd, start, end)
            finally:
                os.close(fd)

    def adopt(self, key: str, content_hash: str, size: int, blobs: BlobStore) -> bool:
        return False  # the part file is the file already; put_file of a stored content drops it

    def assembled(self, key: str) -> Path:
        return self.part_path(key)

    def file_on_disk(self, key: str) -> Path:
        return self.part_path(key)

    def store(self, key: str, content_hash: str, blobs: BlobStore) -> str:
        return blobs.put_file(content_hash, self.part_path(key))

    def exists(self, key: str) -> bool:
        return self.part_path(key).exists()

    def create_empty(self, key: str) -> None:
        self.open_part(key).close()

    def remove(self, key: str, *, later: bool = False) -> None:
        # gone from their names now, their space freed in the background (storage/discard.py)
        self.discarder.discard(self.part_path(key))
        self.discarder.discard(self.staging_dir / key)

    def upload_ids_on_disk(self) -> Iterator[tuple[str, float]]:
        seen: set[str] = set()
        for entry in self.parts_dir.iterdir():
            if entry.suffix == ".part":
                seen.add(entry.stem)
                yield entry.stem, entry.stat().st_mtime
        for entry in self.staging_dir.iterdir():
            if entry.is_dir() and entry.name not in seen:
                yield entry.name, entry.stat().st_mtime


def _place(source: Path, fd: int, offset: int, size: int) -> None:
    """Copy ``size`` bytes of ``source`` to ``offset`` of ``fd`` inside the kernel (no user-space copy)."""
    src = os.open(source, os.O_RDONLY)
    try:
        copied = 0
        while copied < size:
            n = os.copy_file_range(src, fd, size - copied, copied, offset + copied)
            if n == 0:
                raise OSError(f"staged chunk {source} ended early")
            copied += n
    finally:
        os.close(src)


_DERIVED_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: paths kept by :meth:`LocalBlobStore.local_path` before it forgets them all
_LOCAL_PATHS_KEPT = 4096


def _check_hash(key: str) -> str:
    if not _SHA256.fullmatch(key):
        raise ValueError(f"not a SHA-256 key: {key!r}")
    return key


class LocalBlobStore:
    """Content-addressed files under ``blobs/<hh>/<sha256>`` (two-hex shards keep folders small),
    and files derived from them under ``derived/<hh>/<sha256>/<name>``; blobs being deleted
    wait under ``withdrawn/<sha256>`` (same filesystem: moving them is a rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root / "blobs"
        self.root.mkdir(parents=True, exist_ok=True)
        self.derived_root = root / "derived"
        self.withdrawn_root = root / "withdrawn"
        self.withdrawn_root.mkdir(exist_ok=True)
        self.discarder = discarder_for(root / DISCARD_FOLDER)
        self._local_paths: dict[str, Path] = {}

    def _path(self, key: str) -> Path:
        """``<sha256>`` (a blob) or ``<sha256>/<name>`` (a derived file)."""
        digest, slash, name = key.partition("/")
        _check_hash(digest)
        if not slash:
            return self.root / digest[:2] / digest
        if not _DERIVED_NAME.fullmatch(name):
            raise ValueError(f"not a derived file name: {name!r}")
        return self.derived_root / digest[:2] / digest / name

    def path(self, key: str) -> Path:
        return self._path(key)

    def put_file(self, content_hash: str, source: Path) -> str:
        target = self._path(content_hash)
        target.parent.mkdir(exist_ok=True)
        if target.exists():  # a duplicate: its answer does not wait for the unlink (storage/discard.py)
            self.discarder.discard(source)
            return content_hash
        try:
            source.replace(target)  # same filesystem: a rename, no copy
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise translate_os_error(exc) from exc
            shutil.move(source, target)
        target.chmod(0o440)
        return content_hash

    def exists(self, content_hash: str) -> bool:
        return self._path(content_hash).exists()

    def open(self, key: str) -> BinaryIO:
        return self._path(key).open("rb")

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def withdraw(self, key: str) -> bool:
        aside = self.withdrawn_root / _check_hash(key)
        try:
            self._path(key).rename(aside)
        except FileNotFoundError:
            return False
        os.utime(aside)  # when it was withdrawn, for the sweep's grace
        return True

    def restore(self, key: str) -> None:
        aside = self.withdrawn_root / _check_hash(key)
        target = self._path(key)
        target.parent.mkdir(exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if target.exists():  # the same bytes were stored again meanwhile: keep that copy
                aside.unlink()
            else:
                aside.rename(target)

    def purge_withdrawn(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.withdrawn_root / _check_hash(key)).unlink()

    def withdrawn(self) -> Iterator[tuple[str, float]]:
        for entry in self.withdrawn_root.iterdir():
            with contextlib.suppress(FileNotFoundError, ValueError):
                yield _check_hash(entry.name), entry.stat().st_mtime

    def local_path(self, key: str) -> Path | None:
        """Kept per key (a content's path never changes; a player asks once per seek)."""
        path = self._local_paths.get(key)
        if path is None:
            if len(self._local_paths) >= _LOCAL_PATHS_KEPT:
                self._local_paths.clear()
            path = self._local_paths[key] = self._path(key)
        return path

    def read_range(self, key: str, start: int, end: int, chunk_size: int = 256 * 1024) -> Iterator[bytes]:
        with self._path(key).open("rb") as file:
            file.seek(start)
            position = start
            while position < end:
                data = file.read(min(chunk_size, end - position))
                if not data:
                    raise VidgateError(f"stored file {key} ends at {position}, before {end}")
                position += len(data)
                yield data

    def derived_key(self, content_hash: str, name: str) -> str:
        return f"{_check_hash(content_hash)}/{check_derived_name(name)}"

    def put_derived(self, content_hash: str, name: str, source: Path) -> str:
        key = self.derived_key(content_hash, name)
        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(source, target)  # a rename on the same filesystem: readers see old or new
        except OSError as exc:
            raise translate_os_error(exc) from exc
        return key

    def delete_derived(self, content_hash: str) -> None:
        shutil.rmtree(self.derived_root / content_hash[:2] / _check_hash(content_hash), ignore_errors=True)

    def scratch_dir(self) -> Path | None:
        return self.root.parent

    def check(self) -> None:
        probe = self.root / ".probe"
        probe.write_bytes(b"ok")
        probe.unlink()

    def derived_files(self) -> Iterator[tuple[str, float]]:
        if not self.derived_root.is_dir():
            return
        for shard in sorted(self.derived_root.iterdir()):
            if not shard.is_dir():
                continue
            for content in sorted(shard.iterdir()):
                # gone meanwhile (a delete), or not a store's name: skipped
                with contextlib.suppress(FileNotFoundError, NotADirectoryError, ValueError):
                    digest = _check_hash(content.name)
                    for entry in sorted(content.iterdir()):
                        with contextlib.suppress(FileNotFoundError, ValueError):
                            yield f"{digest}/{check_derived_name(entry.name)}", entry.stat().st_mtime
