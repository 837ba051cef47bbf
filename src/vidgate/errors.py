"""Every error vidgate reports, as a value with its stable code and HTTP status.

Domain code raises these; the API maps them to ``{"success": false, "error": {...}}``
in one exception handler. Nothing below the API edge raises ``HTTPException``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class VidgateError(Exception):
    """Base of every expected failure. ``code`` is stable; ``message`` is for people."""

    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500
    #: True when the refusal is about the file's content: its upload session is failed and its
    #: data deleted, since sending the same bytes again cannot succeed.
    fails_session: ClassVar[bool] = False

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def http_headers(self) -> dict[str, str]:
        """Headers the HTTP answer must carry (e.g. 416's ``Content-Range``)."""
        return {}


# 400: the request itself is malformed
class BadRequest(VidgateError):
    code = "bad_request"
    status = 400


class InvalidParameter(BadRequest):
    code = "invalid_parameter"


class InvalidOptions(BadRequest):
    code = "invalid_options"


class MissingFile(BadRequest):
    code = "missing_file"


class MalformedMultipart(BadRequest):
    code = "malformed_multipart"


class ChunkIndexOutOfRange(BadRequest):
    code = "chunk_index_out_of_range"


class TotalChunksMismatch(BadRequest):
    code = "total_chunks_mismatch"


class ChunkSizeMismatch(BadRequest):
    code = "chunk_size_mismatch"


class EmptyChunk(BadRequest):
    code = "empty_chunk"


class InvalidFilename(BadRequest):
    code = "invalid_filename"


class InvalidRange(BadRequest):
    """A ``Range: bytes=...`` header that is not a valid byte range."""

    code = "invalid_range"


class InvalidCursor(BadRequest):
    """A listing cursor this server did not hand out."""

    code = "invalid_cursor"


# 401 / 404
class Unauthenticated(VidgateError):
    code = "unauthenticated"
    status = 401


class NotFound(VidgateError):
    code = "not_found"
    status = 404


class SessionNotFound(NotFound):
    code = "session_not_found"


class VideoNotFound(NotFound):
    code = "video_not_found"


# 409: conflicts with what the server already holds
class Conflict(VidgateError):
    code = "conflict"
    status = 409


class ChunkConflict(Conflict):
    code = "chunk_conflict"


class ChunkInProgress(Conflict):
    code = "chunk_in_progress"


class SessionNotActive(Conflict):
    code = "session_not_active"


class ResultNotReady(Conflict):
    code = "result_not_ready"


class PictureNotReady(Conflict):
    """Posters and storyboards are made by processing; this video has none (yet)."""

    code = "picture_not_ready"


# 413 / 415 / 422
class TooLarge(VidgateError):
    code = "too_large"
    status = 413


class FileTooLarge(TooLarge):
    code = "file_too_large"


class ChunkTooLarge(TooLarge):
    code = "chunk_too_large"


class TooManyChunks(TooLarge):
    code = "too_many_chunks"


class UnsupportedMediaType(VidgateError):
    code = "unsupported_media_type"
    status = 415


class ExtensionNotAllowed(UnsupportedMediaType):
    code = "extension_not_allowed"


class ExtensionBlocked(UnsupportedMediaType):
    code = "extension_blocked"


class UnrecognizedFormat(UnsupportedMediaType):
    code = "unrecognized_format"
    fails_session = True


class FormatMismatch(UnsupportedMediaType):
    code = "format_mismatch"
    fails_session = True


class InvalidContent(VidgateError):
    code = "invalid_content"
    status = 422
    fails_session = True


class FileHashMismatch(InvalidContent):
    code = "file_hash_mismatch"


class DangerousContent(InvalidContent):
    code = "dangerous_content"


class TrailingData(InvalidContent):
    code = "trailing_data"


class TruncatedFile(InvalidContent):
    code = "truncated_file"


class NoVideoStream(InvalidContent):
    code = "no_video_stream"


class UndecodableVideo(InvalidContent):
    code = "undecodable_video"


class DurationTooLong(InvalidContent):
    code = "duration_too_long"


class DimensionsTooLarge(InvalidContent):
    code = "dimensions_too_large"


class MalwareDetected(InvalidContent):
    code = "malware_detected"


class RangeNotSatisfiable(VidgateError):
    """The Range lies wholly past the end of the file; ``Content-Range`` tells its size."""

    code = "range_not_satisfiable"
    status = 416

    def http_headers(self) -> dict[str, str]:
        return {"Content-Range": f"bytes */{self.details['size']}"}


# 507: the server cannot store what it was sent
class InsufficientStorage(VidgateError):
    code = "insufficient_storage"
    status = 507


# 403: authenticated, but not allowed (and tus 1.0 statuses, the tus endpoint only)
class Forbidden(VidgateError):
    code = "forbidden"
    status = 403


class InsufficientRole(Forbidden):
    """The key's role does not allow this; the message names the roles that do."""

    code = "insufficient_role"


class InvalidUrlSignature(Forbidden):
    """Library: a signed URL whose signature does not match (altered, or for another video)."""

    code = "invalid_url_signature"


class UrlExpired(Forbidden):
    """Library: a signed URL past its expiry (ask for fresh ones: the listing or /urls)."""

    code = "url_expired"


class FinalUploadImmutable(Forbidden):
    """tus: a final (concatenated) upload takes no PATCH."""

    code = "final_upload_immutable"


class UploadGone(VidgateError):
    """tus: the upload existed but expired, was terminated or failed."""

    code = "upload_gone"
    status = 410


class OffsetMismatch(Conflict):
    """tus: the PATCH's Upload-Offset is not where the upload stands; HEAD tells where."""

    code = "offset_mismatch"


class TusVersionUnsupported(VidgateError):
    code = "tus_version_unsupported"
    status = 412


class InvalidContentType(UnsupportedMediaType):
    code = "invalid_content_type"


class UploadLocked(VidgateError):
    """tus: another request is writing this upload right now (clients retry 423)."""

    code = "upload_locked"
    status = 423


class ChecksumMismatch(VidgateError):
    """tus checksum extension: the body does not match Upload-Checksum; nothing was kept."""

    code = "checksum_mismatch"
    status = 460


# 503: a required dependency is down; the upload is kept and checked again later
class ScannerUnavailable(VidgateError):
    code = "scanner_unavailable"
    status = 503


class QueueUnavailable(VidgateError):
    """The broker cannot take a job now; the video stays queued and is offered again later."""

    code = "queue_unavailable"
    status = 503


class StorageUnavailable(VidgateError):
    """The object store (S3) cannot be reached or answers with a server error, after the
    client's retries; whatever was being stored is kept and tried again later."""

    code = "storage_unavailable"
    status = 503


class LockUnavailable(VidgateError):
    """The upload locks shared by the API hosts (Redis) cannot be reached while uploads in
    progress live in the bucket, where another host could write the same upload: the chunk or
    PATCH is refused unwritten (nothing acknowledged is lost) and can be sent again."""

    code = "lock_unavailable"
    status = 503


class StorageMisconfigured(StorageUnavailable):
    """The object store refuses our credentials or has no such bucket: an operator must act
    (the message names the setting); the same request will work once that is fixed."""

    code = "storage_misconfigured"


def all_error_classes() -> list[type[VidgateError]]:
    """Every concrete error class, for documentation and tests."""
    seen: list[type[VidgateError]] = []
    stack: list[type[VidgateError]] = [VidgateError]
    while stack:
        cls = stack.pop()
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return sorted(seen, key=lambda c: (c.status, c.code))
