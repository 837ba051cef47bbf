"""tus 1.0.0 on ``/v1/tus/``: the HTTP edge of :mod:`vidgate.uploads.tus` and its header grammar.

Core (OPTIONS, HEAD, PATCH) with the extensions creation, creation-with-upload,
creation-defer-length, expiration, checksum (sha1, sha256, md5), termination and
concatenation. Every response carries ``Tus-Resumable``; a POST with
``X-HTTP-Method-Override`` is handled as the method it names. Errors keep the API's JSON
envelope, with tus's statuses (409 offset, 412 version, 415 content type, 423 locked,
460 checksum). When an upload completes, ``Vidgate-Session-Id``, ``Vidgate-Video-Id``,
``Vidgate-Content-Hash`` and ``Vidgate-Duplicate`` tell the client what became of it; the
upload id is also the seed API's session id.

As in tusd's handler, the headers are parsed here (``Upload-Metadata``, ``Upload-Concat``,
``Upload-Checksum``) and the upload service gets their meaning; a held lock
(``ChunkInProgress``) is answered as tus's 423 ``UploadLocked`` here too.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
from collections.abc import Callable, Iterator
from email.utils import format_datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vidgate.api.deps import CurrentUser, ServicesDep, Uploader
from vidgate.api.receiving import after_answer, receiving
from vidgate.api.schemas import ErrorEnvelope
from vidgate.auth import Principal
from vidgate.db.models import SessionStatus
from vidgate.errors import ChunkInProgress, InvalidContentType, InvalidParameter, TusVersionUnsupported, UploadLocked
from vidgate.hashing import Hasher
from vidgate.uploads.models import TusUpload
from vidgate.uploads.tus import TusService
from vidgate.uploads.writer import SinkResult
from vidgate.uploads.writing import Checksum

TUS_VERSION = "1.0.0"
EXTENSIONS = (
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "expiration",
    "checksum",
    "termination",
    "concatenation",
)
CHECKSUM_ALGORITHMS: dict[str, Callable[[], Hasher]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "md5": hashlib.md5,
}
PREFIX = "/v1/tus"
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
EXPOSED_HEADERS = [
    "Location",
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
    "Tus-Checksum-Algorithm",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Defer-Length",
    "Upload-Metadata",
    "Upload-Expires",
    "Upload-Concat",
    "Vidgate-Session-Id",
    "Vidgate-Video-Id",
    "Vidgate-Content-Hash",
    "Vidgate-Duplicate",
]

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope}
    for status in (400, 401, 403, 404, 409, 410, 412, 413, 415, 422, 423, 460, 503, 507)
}


def parse_metadata(header: str | None) -> dict[str, str]:
    """``Upload-Metadata: key base64,key2 base64,flag`` as a dict (a key without value maps to "")."""
    result: dict[str, str] = {}
    if not header:
        return result
    for pair in header.split(","):
        parts = pair.strip().split(" ")
        if not parts[0] or len(parts) > 2:
            raise InvalidParameter(f"Upload-Metadata: {pair.strip()[:60]!r} is not 'key base64-value'.")
        value = ""
        if len(parts) == 2:
            try:
                value = base64.b64decode(parts[1], validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise InvalidParameter(f"Upload-Metadata: the value of {parts[0]!r} is not base64 of UTF-8.") from exc
        result[parts[0]] = value
    return result


def parse_checksum(header: str | None) -> Checksum | None:
    """``Upload-Checksum: sha1 <base64>`` as the digest to compare and a hasher to compute it."""
    if header is None:
        return None
    algorithm, _, encoded = header.strip().partition(" ")
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise InvalidParameter(
            f"Upload-Checksum algorithm {algorithm!r} is not supported; use one of {', '.join(CHECKSUM_ALGORITHMS)}."
        )
    try:
        digest = base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise InvalidParameter("Upload-Checksum: the digest is not base64.") from exc
    return Checksum(algorithm, digest, CHECKSUM_ALGORITHMS[algorithm]())


@contextlib.contextmanager
def _locked_as_423() -> Iterator[None]:
    """tus's answer to a lock another request holds: 423, which tus clients retry."""
    try:
        yield
    except ChunkInProgress as exc:
        raise UploadLocked("Another request is writing this upload; retry when it ends.") from exc


def _header(name: str, description: str, *, required: bool = False, integer: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": 0} if integer else {"type": "string"}
    return {"name": name, "in": "header", "required": required, "description": description, "schema": schema}


_VERSION_HEADER = {
    "name": "Tus-Resumable",
    "in": "header",
    "required": True,
    "description": "The protocol version; anything but 1.0.0 gets 412.",
    "schema": {"type": "string", "enum": [TUS_VERSION]},
}
_CHECKSUM_HEADER = _header("Upload-Checksum", "'sha1|sha256|md5 <base64 digest>' of this body; 460 if it differs.")
_BODY = {
    "requestBody": {
        "required": False,
        "content": {OFFSET_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}},
    }
}

router = APIRouter(prefix=PREFIX, tags=["tus"], responses=_ERRORS)


class TusProtocolMiddleware:
    """``X-HTTP-Method-Override`` for clients that can only send GET/POST, and
    ``Tus-Resumable`` on every tus response (errors included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        override = next((v for k, v in scope["headers"] if k == b"x-http-method-override"), None)
        if override and scope["method"] == "POST":
            scope = dict(scope, method=override.decode("latin-1").strip().upper())

        async def send_with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Tus-Resumable"] = TUS_VERSION
                if message["status"] == TusVersionUnsupported.status:
                    headers["Tus-Version"] = TUS_VERSION
            await send(message)

        await self.app(scope, receive, send_with_version)


def _require_version(request: Request) -> None:
    version = request.headers.get("tus-resumable")
    if version != TUS_VERSION:
        raise TusVersionUnsupported(f"Send Tus-Resumable: {TUS_VERSION} (got {version!r}); this server speaks 1.0.0.")


def _int_header(request: Request, name: str) -> int | None:
    value = request.headers.get(name)
    if value is None:
        return None
    if not value.isdigit():
        raise InvalidParameter(f"{name} must be a non-negative integer, got {value[:40]!r}.")
    return int(value)


def _upload_headers(request: Request, upload: TusUpload, *, location: bool = False) -> dict[str, str]:
    headers = {"Upload-Offset": str(upload.offset), "Cache-Control": "no-store"}
    if upload.length is not None:
        headers["Upload-Length"] = str(upload.length)
    else:
        headers["Upload-Defer-Length"] = "1"
    if upload.status is SessionStatus.ACTIVE:
        headers["Upload-Expires"] = format_datetime(upload.expires_at, usegmt=True)
    if upload.metadata:
        headers["Upload-Metadata"] = upload.metadata
    if upload.concat == "partial":
        headers["Upload-Concat"] = "partial"
    elif upload.concat == "final":
        urls = " ".join(f"{PREFIX}/{part}" for part in upload.concat_parts)
        headers["Upload-Concat"] = f"final;{urls}"
    headers["Vidgate-Session-Id"] = upload.upload_id
    if upload.video_id:
        headers["Vidgate-Video-Id"] = upload.video_id
        headers["Vidgate-Duplicate"] = "true" if upload.duplicate else "false"
    if upload.content_hash:
        headers["Vidgate-Content-Hash"] = upload.content_hash
    if location:
        headers["Location"] = str(request.url_for("tus_upload", upload_id=upload.upload_id))
    return headers


async def _receive_body(
    request: Request,
    principal: Principal,
    tus: TusService,
    upload_id: str,
    offset: int,
    *,
    length: int | None,
    checksum: str | None,
) -> TusUpload:
    """Stream the body to the upload at ``offset``; on a break-off keep what arrived. Returns
    the upload as it stands after this body."""
    expected = parse_checksum(checksum)
    with _locked_as_423():
        plan = await run_in_threadpool(tus.begin_patch, principal, upload_id, offset, length=length, checksum=expected)
    sink = tus.open_sink(plan)

    async def abort(error: BaseException) -> None:
        if isinstance(error, ClientDisconnect):
            kept: SinkResult | None = await sink.keep_written()
            await run_in_threadpool(tus.keep_received, plan, kept)
        else:
            await sink.abort()
            await run_in_threadpool(tus.abort_patch, plan, error)

    async with receiving(request, abort):
        async for data in request.stream():
            await sink.write(data)
        result = await sink.finish()
    return await run_in_threadpool(tus.finish_patch, plan, result)


def _options_response(services: ServicesDep) -> Response:
    return Response(
        status_code=204,
        headers={
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": ",".join(EXTENSIONS),
            "Tus-Max-Size": str(services.tus.max_size),
            "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
        },
    )


@router.options("/", status_code=204, summary="tus: server capabilities")
def options_root(services: ServicesDep) -> Response:
    return _options_response(services)


@router.options("/{upload_id}", status_code=204, include_in_schema=False)
def options_upload(upload_id: str, services: ServicesDep) -> Response:
    return _options_response(services)


@router.post(
    "/",
    status_code=201,
    summary="tus: create an upload (optionally with its first bytes, or as final)",
    openapi_extra={
        "parameters": [
            _VERSION_HEADER,
            _header("Upload-Length", "Size of the whole upload in bytes.", integer=True),
            _header("Upload-Defer-Length", "1: the length is sent with a later PATCH."),
            _header("Upload-Metadata", "'filename <base64>,filetype <base64>,priority <base64>'."),
            _header("Upload-Concat", "'partial', or 'final;<upload URL> <upload URL> ...'."),
            _CHECKSUM_HEADER,
        ],
        **_BODY,
    },
)
async def create_upload(request: Request, principal: Uploader, services: ServicesDep) -> Response:
    _require_version(request)
    concat = request.headers.get("upload-concat")
    metadata = request.headers.get("upload-metadata")
    if concat is not None and concat.startswith("final;"):
        part_ids = [url.rstrip("/").rsplit("/", 1)[-1] for url in concat[len("final;") :].split()]
        if not part_ids:
            raise InvalidParameter("Upload-Concat: final needs at least one partial upload.")
        with _locked_as_423():
            upload = await run_in_threadpool(
                services.tus_creation.concatenate, principal, part_ids, parse_metadata(metadata), metadata
            )
        return Response(status_code=201, headers=_upload_headers(request, upload, location=True))
    if concat is not None and concat != "partial":
        raise InvalidParameter("Upload-Concat must be 'partial' or 'final;<upload URLs>'.")
    length = _int_header(request, "upload-length")
    defer = request.headers.get("upload-defer-length")
    if defer is not None and (defer != "1" or length is not None):
        raise InvalidParameter("Upload-Defer-Length must be 1, and only without Upload-Length.")
    if length is None and defer is None:
        raise InvalidParameter("Send Upload-Length (or Upload-Defer-Length: 1).")
    upload = await run_in_threadpool(
        services.tus_creation.create,
        principal,
        length=length,
        metadata=parse_metadata(metadata),
        metadata_header=metadata,
        partial_upload=concat == "partial",
    )
    has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    if has_body and request.headers.get("content-type", "").split(";")[0].strip().lower() == OFFSET_CONTENT_TYPE:
        with after_answer() as later:
            upload = await _receive_body(
                request,
                principal,
                services.tus,
                upload.upload_id,
                0,
                length=None,
                checksum=request.headers.get("upload-checksum"),
            )
        headers = _upload_headers(request, upload, location=True)
        return Response(status_code=201, headers=headers, background=later.task())
    return Response(status_code=201, headers=_upload_headers(request, upload, location=True))


@router.head(
    "/{upload_id}",
    name="tus_upload",
    summary="tus: where an upload stands",
    openapi_extra={"parameters": [_VERSION_HEADER]},
)
def head_upload(upload_id: str, request: Request, principal: CurrentUser, services: ServicesDep) -> Response:
    _require_version(request)
    upload = services.tus.get(principal, upload_id)
    return Response(status_code=200, headers=_upload_headers(request, upload))


@router.patch(
    "/{upload_id}",
    status_code=204,
    summary="tus: append bytes at Upload-Offset",
    openapi_extra={
        "parameters": [
            _VERSION_HEADER,
            _header(
                "Upload-Offset",
                "Where this body starts; 409 unless it is where the upload stands.",
                required=True,
                integer=True,
            ),
            _header("Upload-Length", "The length, if it was deferred.", integer=True),
            _CHECKSUM_HEADER,
        ],
        **_BODY,
    },
)
async def patch_upload(upload_id: str, request: Request, principal: Uploader, services: ServicesDep) -> Response:
    _require_version(request)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != OFFSET_CONTENT_TYPE:
        raise InvalidContentType(f"PATCH bodies must be sent as Content-Type: {OFFSET_CONTENT_TYPE}.")
    offset = _int_header(request, "upload-offset")
    if offset is None:
        raise InvalidParameter("Send Upload-Offset: the offset this body starts at (HEAD tells it).")
    with after_answer() as later:
        upload = await _receive_body(
            request,
            principal,
            services.tus,
            upload_id,
            offset,
            length=_int_header(request, "upload-length"),
            checksum=request.headers.get("upload-checksum"),
        )
    return Response(status_code=204, headers=_upload_headers(request, upload), background=later.task())


@router.delete(
    "/{upload_id}",
    status_code=204,
    summary="tus: terminate an unfinished upload",
    openapi_extra={"parameters": [_VERSION_HEADER]},
)
def delete_upload(upload_id: str, request: Request, principal: Uploader, services: ServicesDep) -> Response:
    _require_version(request)
    services.tus.terminate(principal, upload_id)
    return Response(status_code=204)
