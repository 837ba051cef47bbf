"""The blob store in an S3-compatible bucket (``STORAGE_BACKEND=s3``), through botocore.

Keys are the local store's: ``<sha256>`` for a stored video and ``<sha256>/<name>`` for a
file derived from it; in the bucket they are ``<prefix>blobs/<sha[:2]>/<sha256>`` and
``<prefix>derived/<sha[:2]>/<sha256>/<name>``, so each content is stored once and every
owner of it shares its pictures. Nothing is ever held whole in memory: files go up as
multipart uploads read from disk part by part (``STORAGE_S3_PART_SIZE``, at most
``STORAGE_S3_CONCURRENCY`` at once), reads are ranged GETs streamed in chunks, and
:class:`RangeReader` gives PyAV a seekable file over ranged GETs with one bounded window.

Errors are translated here, at the boundary: unreachable or 5xx (after botocore's
``standard`` retries, which also retry ``SlowDown`` and other throttling with backoff)
-> :class:`StorageUnavailable` (503); refused credentials or no such bucket ->
:class:`StorageMisconfigured`, naming what to set. Every request and every failed attempt
is counted by operation (``vidgate_s3_requests``, ``vidgate_s3_errors``) from botocore's
event hooks.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import logging
import math
import mimetypes
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

from vidgate import metrics
from vidgate.config import StorageSettings
from vidgate.errors import StorageMisconfigured, StorageUnavailable, VidgateError
from vidgate.storage.base import check_derived_name, check_hash

log = logging.getLogger(__name__)

MAX_PARTS = 10_000  # S3's limit on parts of one multipart upload
MIB = 1 << 20
#: error codes botocore's standard retry mode treats as throttling (and retries with backoff)
THROTTLING_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
    }
)
CREDENTIAL_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken", "403"}
)
MISSING_KEY_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
CREDENTIALS_HINT = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with its shared credentials file "
    "(the standard AWS chain)"
)


def make_client(storage: StorageSettings) -> Any:
    """A botocore S3 client for ``storage`` (thread-safe: one per store), credentials from the
    standard AWS chain, with the request metrics hooked in."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise StorageMisconfigured(
            "STORAGE_BACKEND=s3 needs boto3: install vidgate with the s3 extra (pip install 'vidgate[s3]')"
        ) from exc
    config = Config(
        region_name=storage.s3_region,
        signature_version="s3v4",
        s3={"addressing_style": storage.s3_addressing_style},
        # standard: 5xx, dropped connections and throttling (SlowDown ...) retried with
        # exponential backoff and jitter, up to max_attempts tries in all
        retries={"mode": "standard", "total_max_attempts": storage.s3_max_attempts},
        connect_timeout=storage.s3_timeout_seconds,
        read_timeout=storage.s3_timeout_seconds,
        max_pool_connections=max(10, 2 * storage.s3_concurrency),
        # checksums only where S3 requires them: S3-compatible servers (Swift 2.30 ...) do not all
        # take the CRC trailers newer botocore sends by default; the SHA-256 is ours anyway
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = boto3.session.Session()
    client = session.client("s3", endpoint_url=storage.s3_endpoint_url, config=config)
    events = client.meta.events
    events.register("before-send.s3", _count_request)
    events.register_first("needs-retry.s3", _count_error)  # first: the retry handler answers, ending the emit
    events.register("before-sign.s3.DeleteObjects", _content_md5)
    return client


def _content_md5(request: Any = None, **_: Any) -> None:
    """DeleteObjects with Content-MD5 (which S3 has always taken and Swift's s3api requires)
    instead of the CRC32 header that newer botocore sends for it."""
    body = request.body or b""
    if isinstance(body, str):
        body = body.encode()
    for name in [n for n in request.headers if n.lower().startswith(("x-amz-checksum-", "x-amz-sdk-checksum"))]:
        del request.headers[name]
    del request.headers["Content-MD5"]  # set once, whatever an earlier attempt set
    request.headers["Content-MD5"] = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()


def _operation_of(event_name: str) -> str:
    return event_name.rsplit(".", 1)[-1]


def _count_request(event_name: str = "", **_: Any) -> None:
    """Every HTTP request (each retry too), by operation."""
    metrics.S3_REQUESTS.labels(_operation_of(event_name)).inc()


def _count_error(
    response: tuple[Any, dict[str, Any]] | None = None,
    caught_exception: Exception | None = None,
    operation: Any = None,
    **_: Any,
) -> None:
    """Every failed attempt, by operation and kind: connection, throttled, server (5xx) or
    client (4xx other than a missing key, which is an answer, not an error)."""
    name = str(getattr(operation, "name", "unknown"))
    if caught_exception is not None:
        metrics.S3_ERRORS.labels(name, "connection").inc()
        return
    if response is None:
        return
    http, parsed = response
    status = int(getattr(http, "status_code", 0) or 0)
    code = str((parsed or {}).get("Error", {}).get("Code", ""))
    if code in THROTTLING_CODES or status == 429:
        metrics.S3_ERRORS.labels(name, "throttled").inc()
    elif status >= 500:
        metrics.S3_ERRORS.labels(name, "server").inc()
    elif status >= 400 and status != 404 and code not in MISSING_KEY_CODES:
        metrics.S3_ERRORS.labels(name, "client").inc()


class S3BlobStore:
    """Content-addressed files in one bucket (see the module's docstring)."""

    def __init__(self, storage: StorageSettings, client: Any | None = None) -> None:
        if not storage.s3_bucket:
            raise StorageMisconfigured("STORAGE_BACKEND=s3 needs STORAGE_S3_BUCKET")
        self.settings = storage
        self.bucket = storage.s3_bucket
        self.prefix = storage.s3_prefix
        self.client = client if client is not None else make_client(storage)
        self.where = f"bucket {self.bucket!r} (STORAGE_S3_BUCKET) at {storage.s3_endpoint_url or 'AWS S3'}"

    # ------------------------------------------------------------------ keys
    def object_key(self, key: str) -> str:
        """The bucket's key of ``<sha256>`` or ``<sha256>/<name>``."""
        digest, slash, name = key.partition("/")
        check_hash(digest)
        if not slash:
            return f"{self.prefix}blobs/{digest[:2]}/{digest}"
        return f"{self._derived_prefix(digest)}{check_derived_name(name)}"

    def _derived_prefix(self, content_hash: str) -> str:
        return f"{self.prefix}derived/{content_hash[:2]}/{check_hash(content_hash)}/"

    def derived_key(self, content_hash: str, name: str) -> str:
        return f"{check_hash(content_hash)}/{check_derived_name(name)}"

    # ------------------------------------------------------------------ errors
    @contextlib.contextmanager
    def translated(self, what: str) -> Iterator[None]:
        """botocore's exceptions -> ours (FileNotFoundError for a missing key, as on disk)."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

        try:
            yield
        except ClientError as exc:
            raise self._client_error(exc, what) from exc
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise StorageMisconfigured(f"No S3 credentials for {self.where}: {CREDENTIALS_HINT}.") from exc
        except BotoCoreError as exc:  # connection refused, timeouts, a dropped stream ...
            raise StorageUnavailable(f"The object store is unreachable ({what}): {exc}") from exc

    def _client_error(self, exc: Any, what: str) -> Exception:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code == "NoSuchBucket":
            return StorageMisconfigured(
                f"The {self.where} does not exist: create it with `vidgate storage init` (or name another)."
            )
        if code in MISSING_KEY_CODES or status == 404:
            return FileNotFoundError(f"{what}: no such object in {self.where}")
        if code in CREDENTIAL_CODES or status == 403:
            return StorageMisconfigured(
                f"The object store refused our credentials ({code}) for {self.where}: {CREDENTIALS_HINT}."
            )
        if status >= 500 or code in THROTTLING_CODES:
            return StorageUnavailable(f"The object store failed ({what}): {code or status} {error.get('Message', '')}")
        return VidgateError(f"The object store refused {what}: {code or status} {error.get('Message', '')}")

    # ------------------------------------------------------------------ blobs
    def _head(self, object_key: str) -> dict[str, Any] | None:
        try:
            with self.translated(f"HEAD {object_key}"):
                return cast(dict[str, Any], self.client.head_object(Bucket=self.bucket, Key=object_key))
        except FileNotFoundError:
            return None

    def part_size_for(self, size: int) -> int:
        """STORAGE_S3_PART_SIZE, or bigger (whole MiB) when the file would need over 10 000 parts."""
        wanted = int(self.settings.s3_part_size)
        return max(wanted, math.ceil(size / MAX_PARTS / MIB) * MIB)

    def _upload(self, source: Path, object_key: str, extra: dict[str, Any]) -> None:
        """Send ``source`` from disk: one PUT when it fits a part, else a multipart upload whose
        parts are read from the file as they are sent (s3transfer aborts it if it fails)."""
        from boto3.s3.transfer import TransferConfig

        size = source.stat().st_size
        part = self.part_size_for(size)
        config = TransferConfig(
            multipart_threshold=part,
            multipart_chunksize=part,
            max_concurrency=self.settings.s3_concurrency,
            use_threads=self.settings.s3_concurrency > 1,
        )
        with self.translated(f"upload of {object_key}"):
            self.client.upload_file(str(source), self.bucket, object_key, ExtraArgs=extra, Config=config)

    def put_file(self, content_hash: str, source: Path) -> str:
        key = check_hash(content_hash)
        object_key = self.object_key(key)
        if self._head(object_key) is None:
            # straight to the content's key: an S3 object appears whole or not at all, and two
            # uploads of the same content write the same bytes
            self._upload(source, object_key, {"ContentType": "application/octet-stream", "Metadata": {"sha256": key}})
        source.unlink()  # only once the bucket has it: a failed upload is retried from it
        return key

    def copy_in(self, content_hash: str, source_key: str) -> str:
        """Store the object ``source_key`` of this bucket (an upload completed in the bucket) as
        ``content_hash`` by a server-side copy: no byte passes through this process. If the
        content is already stored, nothing is copied. The source stays (its owner deletes it)."""
        key = check_hash(content_hash)
        object_key = self.object_key(key)
        if self._head(object_key) is None:
            extra = {"ContentType": "application/octet-stream", "Metadata": {"sha256": key}}
            self._copy(source_key, object_key, {**extra, "MetadataDirective": "REPLACE"})
        return key

    def exists(self, content_hash: str) -> bool:
        return self._head(self.object_key(content_hash)) is not None

    def open(self, key: str) -> BinaryIO:
        """A seekable reader for processing (PyAV), which reads a stored video mostly from start to
        end, a few times: one ranged GET streamed in pieces of ``STORAGE_S3_READ_BUFFER`` that goes
        on where the last read stopped; only a seek elsewhere (backwards, or further ahead than one
        piece) starts another GET. At most one piece is held."""
        reader = RangeReader(
            self, self.object_key(key), self.size(key), int(self.settings.s3_read_buffer), streaming=True
        )
        return cast(BinaryIO, io.BufferedReader(reader, buffer_size=64 * 1024))

    def size(self, key: str) -> int:
        object_key = self.object_key(key)
        with self.translated(f"HEAD {object_key}"):
            return int(self.client.head_object(Bucket=self.bucket, Key=object_key)["ContentLength"])

    def delete(self, key: str) -> None:
        object_key = self.object_key(key)
        with self.translated(f"DELETE {object_key}"):
            self.client.delete_object(Bucket=self.bucket, Key=object_key)

    # ------------------------------------------------------------------ withdrawn blobs
    def _withdrawn_key(self, key: str) -> str:
        return f"{self.prefix}withdrawn/{check_hash(key)}"

    def _copy(self, source_key: str, target_key: str, extra: dict[str, Any] | None = None) -> None:
        """A server-side copy: no byte passes through this process. One CopyObject up to S3's
        5 GiB limit of a single copy, UploadPartCopy past it. (s3transfer's part copies send the
        source's ETag as a precondition, which Swift refuses for a multipart upload's "-N" ETag:
        with the part size as the threshold, withdrawing any blob over it failed there.)"""
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(
            multipart_threshold=5 << 30,
            multipart_chunksize=max(int(self.settings.s3_part_size), 256 * MIB),
            max_concurrency=self.settings.s3_concurrency,
            use_threads=self.settings.s3_concurrency > 1,
        )
        with self.translated(f"copy of {source_key} to {target_key}"):
            self.client.copy(
                {"Bucket": self.bucket, "Key": source_key}, self.bucket, target_key, ExtraArgs=extra, Config=config
            )

    def withdraw(self, key: str) -> bool:
        """S3 has no rename: copy aside, then delete the original (a crash in between leaves both,
        and the library's sweep restores or purges the aside copy)."""
        object_key = self.object_key(key)
        if self._head(object_key) is None:
            return False
        try:
            self._copy(object_key, self._withdrawn_key(key))
        except FileNotFoundError:  # deleted between the HEAD and the copy
            return False
        self.delete(key)
        return True

    def restore(self, key: str) -> None:
        aside = self._withdrawn_key(key)
        if self._head(self.object_key(key)) is None:  # else the same bytes were stored again: keep them
            try:
                self._copy(aside, self.object_key(key))
            except FileNotFoundError:
                return
        self.purge_withdrawn(key)

    def purge_withdrawn(self, key: str) -> None:
        aside = self._withdrawn_key(key)
        with self.translated(f"DELETE {aside}"):
            self.client.delete_object(Bucket=self.bucket, Key=aside)

    def withdrawn(self) -> Iterator[tuple[str, float]]:
        prefix = f"{self.prefix}withdrawn/"
        with self.translated(f"listing of {prefix}*"):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                for item in page.get("Contents", []):
                    with contextlib.suppress(ValueError):
                        yield check_hash(item["Key"][len(prefix) :]), item["LastModified"].timestamp()

    def local_path(self, key: str) -> Path | None:
        return None

    def scratch_dir(self) -> Path | None:
        return None

    def read_range(self, key: str, start: int, end: int, chunk_size: int = 256 * 1024) -> Iterator[bytes]:
        return self.stream_object(self.object_key(key), start, end, chunk_size)

    def stream_object(self, object_key: str, start: int, end: int, chunk_size: int = 256 * 1024) -> Iterator[bytes]:
        """Bytes ``[start, end)`` of any object of this bucket (a blob, an upload's staging object
        or piece), in chunks of at most ``chunk_size``: one ranged GET, never whole in memory.
        The one ranged-GET loop of both S3 stores."""
        if end <= start:
            return
        with self.translated(f"GET {object_key} bytes {start}-{end - 1}"):
            body = self.client.get_object(Bucket=self.bucket, Key=object_key, Range=f"bytes={start}-{end - 1}")["Body"]
            position = start
            try:
                for data in body.iter_chunks(chunk_size):
                    position += len(data)
                    yield data
            finally:
                body.close()
        if position < end:
            raise StorageUnavailable(f"{object_key} ended at {position}, before {end}")

    def object_file(self, object_key: str, size: int) -> ObjectFile:
        """The object ``object_key`` as validation reads it: by ranges, never downloaded."""
        return ObjectFile(self, object_key, size)

    # ------------------------------------------------------------------ derived files
    def put_derived(self, content_hash: str, name: str, source: Path) -> str:
        key = self.derived_key(content_hash, name)
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        self._upload(source, self.object_key(key), {"ContentType": kind})  # one PUT: readers see old or new
        source.unlink()
        return key

    def delete_derived(self, content_hash: str) -> None:
        prefix = self._derived_prefix(content_hash)
        with self.translated(f"delete of {prefix}*"):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            # one DELETE each (a content has three or so): DeleteObjects wants Content-MD5 on some
            # servers (Swift) and a CRC checksum header on newer botocore, never both
            for page in pages:
                for item in page.get("Contents", []):
                    self.client.delete_object(Bucket=self.bucket, Key=item["Key"])

    # ------------------------------------------------------------------ the bucket
    def check(self) -> None:
        """HEAD the bucket: reachable, our credentials taken, the bucket there."""
        from botocore.exceptions import ClientError

        try:
            with self.translated(f"HEAD of {self.where}"):
                try:
                    self.client.head_bucket(Bucket=self.bucket)
                except ClientError as exc:  # HEAD answers carry no error code: name it by the status
                    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
                    if status == 404:
                        exc.response.setdefault("Error", {})["Code"] = "NoSuchBucket"
                    raise
        except FileNotFoundError as exc:  # pragma: no cover - NoSuchBucket is named above
            raise StorageMisconfigured(f"The {self.where} does not exist") from exc

    def create_bucket(self) -> bool:
        """Create the bucket (``vidgate storage init``); False when it was there already."""
        from botocore.exceptions import ClientError

        arguments: dict[str, Any] = {"Bucket": self.bucket}
        if self.settings.s3_region != "us-east-1":
            arguments["CreateBucketConfiguration"] = {"LocationConstraint": self.settings.s3_region}
        with self.translated(f"creating {self.where}"):
            try:
                self.client.create_bucket(**arguments)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    self.client.head_bucket(Bucket=self.bucket)  # ours after all? (403 if someone else's)
                    return False
                raise
        return True

    # ------------------------------------------------------------------ listing derived files
    def derived_files(self) -> Iterator[tuple[str, float]]:
        """One listing of ``<prefix>derived/`` (S3 lists in key order: a content's files together)."""
        prefix = f"{self.prefix}derived/"
        with self.translated(f"listing of {prefix}*"):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                for item in page.get("Contents", []):
                    _, _, key = item["Key"][len(prefix) :].partition("/")  # <sha256>/<name> after the shard
                    digest, _, name = key.partition("/")
                    with contextlib.suppress(ValueError):  # not a store's key: left alone
                        yield f"{check_hash(digest)}/{check_derived_name(name)}", item["LastModified"].timestamp()


class RangeReader(io.RawIOBase):
    """A seekable, read-only file over ranged GETs of one object, for PyAV (which reads and
    seeks a file-like object) and anything else that wants a file. It holds one window of at
    most ``window`` bytes: a read inside it is served from memory, any other fetches the window
    starting there. ``streaming``: for a reader that mostly goes on where it stopped (validation's
    probe demuxing the file, processing), one GET runs from the position to the end and each window
    is the next piece of it; a read up to one window ahead of it skips forward in the same GET, a
    read elsewhere starts another, and so does a continuation whose GET broke off (a stream left
    waiting while a slow consumer decodes may be dropped by the server: read again from there, once).
    One GET per window costs the object store a request each (measured on Swift: 115 MB read in
    8 MiB windows took 2.1-2.6 s, streamed 1.0 s). ``requests`` and ``fetched`` say what it cost."""

    def __init__(self, store: S3BlobStore, object_key: str, size: int, window: int, *, streaming: bool = False):
        super().__init__()
        self.store, self.object_key, self.length, self.window = store, object_key, size, window
        self.position = 0
        self._start = 0
        self._data = b""
        self._streaming = streaming
        self._stream: Iterator[bytes] | None = None
        self._stream_at = 0  # where the open GET's next piece begins
        self.requests = 0
        self.fetched = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    @property
    def held(self) -> int:
        """Bytes held in memory now (at most one window)."""
        return len(self._data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self.position + offset
        elif whence == io.SEEK_END:
            target = self.length + offset
        else:
            raise ValueError(f"whence {whence}")
        if target < 0:
            raise OSError(f"seek to {target}, before the start")
        self.position = target
        return target

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self.position >= self.length or not len(view):
            return 0
        offset = self.position - self._start
        if not 0 <= offset < len(self._data):
            self._fill(self.position, len(view))
            offset = self.position - self._start  # a streamed piece may begin before the position
        count = min(len(view), len(self._data) - offset)
        view[:count] = self._data[offset : offset + count]
        self.position += count
        return count

    def pread(self, length: int, offset: int) -> bytes:
        """Up to ``length`` bytes from ``offset`` (fewer only at the end), as ``os.pread``."""
        self.seek(offset)
        pieces: list[bytes] = []
        wanted = min(length, max(0, self.length - offset))
        while wanted > 0:
            data = self.read(wanted)
            if not data:
                break
            pieces.append(data)
            wanted -= len(data)
        return b"".join(pieces)

    def _fill(self, start: int, wanted: int) -> None:
        if self._streaming and wanted <= self.window:
            self._fill_streamed(start)
            return
        end = min(self.length, start + max(self.window, wanted))
        self._data = b""  # the old window goes before the new one comes: at most one held
        self._data = b"".join(self.store.stream_object(self.object_key, start, end, chunk_size=1 << 20))
        self.requests += 1
        self._start = start
        self.fetched += len(self._data)

    def _open_stream(self, start: int) -> None:
        self._end_stream()
        self._stream = self.store.stream_object(self.object_key, start, self.length, chunk_size=self.window)
        self._stream_at = start
        self.requests += 1

    def _fill_streamed(self, start: int) -> None:
        """The piece of the open GET that holds ``start`` (skipping at most one window), else a
        new GET from ``start``."""
        self._data = b""
        continued = self._stream is not None and self._stream_at <= start <= self._stream_at + self.window
        if not continued:
            self._open_stream(start)
        while True:
            assert self._stream is not None
            piece_at = self._stream_at
            try:
                data = next(self._stream, b"")
            except StorageUnavailable:
                if not continued:  # a fresh GET failed: the store is down, not the stream
                    raise
                log.info("the GET of %s broke off at %d; reading on from %d", self.object_key, piece_at, start)
                self._open_stream(start)
                continued = False
                continue
            self._stream_at += len(data)
            self.fetched += len(data)
            if not data or self._stream_at > start:
                self._data, self._start = data, piece_at
                return

    def _end_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None and hasattr(stream, "close"):
            stream.close()  # the generator's finally closes the body (its connection is dropped)

    def close(self) -> None:
        self._data = b""
        self._end_stream()
        super().close()


class ObjectFile:
    """An object of the bucket as validation reads it (a :class:`vidgate.storage.base.RangedFile`):
    by ranges, never downloaded whole nor held in memory."""

    def __init__(self, store: S3BlobStore, object_key: str, size: int) -> None:
        self.store, self.object_key, self.size = store, object_key, size
        self.name = object_key

    def reader(self, window: int | None = None) -> RangeReader:
        """A new reader: ``window`` bytes per GET for scattered small reads (a structure walk),
        else windows of ``STORAGE_S3_READ_BUFFER`` of one streamed GET (sequential reads: the probe,
        the scan)."""
        if window is not None:
            return RangeReader(self.store, self.object_key, self.size, window)
        return RangeReader(
            self.store, self.object_key, self.size, int(self.store.settings.s3_read_buffer), streaming=True
        )
