"""Local-disk storage: the part area for uploads in progress and the default blob store."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from vidgate.errors import InsufficientStorage, VidgateError


def translate_os_error(exc: OSError) -> VidgateError:
    """Map disk errors to domain errors at the storage boundary."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage("The server's storage is full; the upload can be resumed later.")
    return VidgateError(f"storage error: {exc.strerror or exc}")


class PartStore:
    """Part files (``parts/<upload>.part``) that chunks are written into at their offsets, and a
    staging area (``staging/<upload>/``) for the rare chunk whose offset is not yet known."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.parts_dir = root / "parts"
        self.staging_dir = root / "staging"
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        self.staging_dir.mkdir(parents=True, exist_ok=True)

    def part_path(self, upload_id: str) -> Path:
        return self.parts_dir / f"{upload_id}.part"

    def staging_path(self, upload_id: str, name: str) -> Path:
        directory = self.staging_dir / upload_id
        directory.mkdir(parents=True, exist_ok=True)
        return directory / name

    def open_part(self, upload_id: str, reserve: int | None = None) -> int:
        """Open (creating if needed) the part file for writing; reserve ``reserve`` bytes of disk
        up front so a full disk is reported on the first chunk, not in the middle of one."""
        path = self.part_path(upload_id)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise translate_os_error(exc) from exc
        if reserve:
            try:
                os.posix_fallocate(fd, 0, reserve)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                    return os.open(path, os.O_RDWR)
                raise translate_os_error(exc) from exc
        return fd

    def truncate_part(self, upload_id: str, size: int) -> None:
        """Cut preallocated space beyond the real end of the file."""
        os.truncate(self.part_path(upload_id), size)

    def remove(self, upload_id: str) -> None:
        """Delete everything of one upload (part file and staged chunks)."""
        with contextlib.suppress(FileNotFoundError):
            self.part_path(upload_id).unlink()
        shutil.rmtree(self.staging_dir / upload_id, ignore_errors=True)

    def upload_ids_on_disk(self) -> Iterator[tuple[str, float]]:
        """Every upload id that has a part file or staging folder, with its last change time."""
        seen: set[str] = set()
        for entry in self.parts_dir.iterdir():
            if entry.suffix == ".part":
                seen.add(entry.stem)
                yield entry.stem, entry.stat().st_mtime
        for entry in self.staging_dir.iterdir():
            if entry.is_dir() and entry.name not in seen:
                yield entry.name, entry.stat().st_mtime


_DERIVED_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


def _check_hash(key: str) -> str:
    if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
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
        if target.exists():
            source.unlink()
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
        return self._path(key)

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
        return f"{_check_hash(content_hash)}/{name}"

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

    def check(self) -> None:
        probe = self.root / ".probe"
        probe.write_bytes(b"ok")
        probe.unlink()
