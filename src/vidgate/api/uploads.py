"""The seed's upload API: POST /v1/upload/video, GET/DELETE /v1/upload/video/session/{id}.

The multipart body is parsed as it streams in (streaming-form-data, in C): the form fields
that precede the file part are read first, then the file's bytes go straight to their
offset in the session's part file. Nothing is spooled, so each byte is written once.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from streaming_form_data import StreamingFormDataParser
from streaming_form_data.parser import ParseFailedException
from streaming_form_data.targets import BaseTarget

from vidgate.api.deps import CurrentUser, ServicesDep
from vidgate.api.schemas import Envelope, ErrorEnvelope
from vidgate.auth import Principal
from vidgate.errors import (
    BadRequest,
    FileTooLarge,
    InvalidOptions,
    InvalidParameter,
    MalformedMultipart,
    MissingFile,
    VidgateError,
)
from vidgate.uploads.models import ChunkReceipt, ChunkRequest, SessionView
from vidgate.uploads.service import ChunkPlan, UploadService
from vidgate.uploads.writer import ChunkSink

router = APIRouter(prefix="/v1/upload", tags=["uploads"])

FIELD_LIMITS = {
    "session_id": 256,
    "chunk_index": 32,
    "total_chunks": 32,
    "chunk_size": 32,
    "file_size": 32,
    "file_hash": 256,
    "priority": 32,
    "options": 64 * 1024,
}
INT_FIELDS = ("chunk_index", "total_chunks", "chunk_size", "file_size", "priority")
MULTIPART_OVERHEAD = 1 << 20  # generous allowance for boundaries and fields over the file itself
DRAIN_LIMIT = 16 << 20  # after a refusal, read at most this much more so the client sees the answer

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope} for status in (400, 401, 404, 409, 413, 415, 422, 507)
}

_UPLOAD_FORM_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "The video, or one chunk of it."},
                        "session_id": {"type": "string", "description": "Upload session (omit for a new one)."},
                        "chunk_index": {"type": "integer", "minimum": 0},
                        "total_chunks": {"type": "integer", "minimum": 1},
                        "chunk_size": {
                            "type": "integer",
                            "minimum": 1,
                            "description": "Size of every chunk but the last.",
                        },
                        "file_size": {"type": "integer", "minimum": 1, "description": "Size of the whole file."},
                        "file_hash": {"type": "string", "description": "SHA-256 of the whole file (hex)."},
                        "options": {"type": "string", "description": "JSON object of processing options."},
                        "priority": {"type": "integer", "minimum": 1, "maximum": 10},
                    },
                },
                "encoding": {"file": {"contentType": "application/octet-stream"}},
            }
        },
    }
}


class _FieldTarget(BaseTarget):  # type: ignore[misc]
    """A small form field, kept in memory up to a hard limit."""

    def __init__(self, name: str, limit: int) -> None:
        super().__init__()
        self.name = name
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0
        self.seen = False

    def on_start(self) -> None:
        self.seen = True

    async def on_start_async(self) -> None:
        self.seen = True

    def on_data_received(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise InvalidParameter(f"Form field {self.name!r} is longer than {self.limit} bytes.")
        self.parts.append(chunk)

    async def on_data_received_async(self, chunk: bytes) -> None:
        self.on_data_received(chunk)

    @property
    def text(self) -> str | None:
        if not self.seen:
            return None
        try:
            return b"".join(self.parts).decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise InvalidParameter(f"Form field {self.name!r} is not UTF-8 text.") from exc


class _FileTarget(BaseTarget):  # type: ignore[misc]
    """The file part: at its start the fields read so far become a chunk plan, then its bytes
    stream into the plan's sink."""

    def __init__(self, principal: Principal, service: UploadService, fields: dict[str, _FieldTarget]) -> None:
        super().__init__()
        self.principal = principal
        self.service = service
        self.fields = fields
        self.plan: ChunkPlan | None = None
        self.sink: ChunkSink | None = None
        self.fields_seen_at_start: set[str] = set()
        self.done = False

    async def on_start_async(self) -> None:
        if self.plan is not None:
            raise BadRequest("Send exactly one file part per request.")
        self.fields_seen_at_start = {name for name, target in self.fields.items() if target.seen}
        request = _chunk_request(self.fields, self.multipart_filename, self.multipart_content_type)
        self.plan = await run_in_threadpool(self.service.begin_chunk, self.principal, request)
        self.sink = self.service.open_sink(self.plan)

    async def on_data_received_async(self, chunk: bytes) -> None:
        assert self.sink is not None
        await self.sink.write(chunk)

    async def on_finish_async(self) -> None:
        self.done = True


def _chunk_request(fields: dict[str, _FieldTarget], filename: str | None, content_type: str | None) -> ChunkRequest:
    values: dict[str, Any] = {}
    for name in INT_FIELDS:
        text = fields[name].text
        if text:
            try:
                values[name] = int(text)
            except ValueError as exc:
                raise InvalidParameter(f"{name} must be an integer, got {text[:40]!r}.") from exc
    for name in ("session_id", "file_hash"):
        text = fields[name].text
        if text:
            values[name] = text
    options_text = fields["options"].text
    if options_text:
        try:
            options = json.loads(options_text)
        except json.JSONDecodeError as exc:
            raise InvalidOptions(f"options is not valid JSON: {exc.msg} at position {exc.pos}.") from exc
        if not isinstance(options, dict):
            raise InvalidOptions('options must be a JSON object, such as {"model_type": "resnet50"}.')
        values["options"] = options
    return ChunkRequest(filename=filename, content_type=content_type, **values)


async def _drain(request: Request, limit: int) -> None:
    """Read (and drop) what the client is still sending, up to ``limit``, so it reads our answer."""
    received = 0
    try:
        async for data in request.stream():
            received += len(data)
            if received > limit:
                return
    except (ClientDisconnect, RuntimeError):
        return


async def receive_upload(request: Request, principal: Principal, service: UploadService) -> ChunkReceipt:
    """Stream one multipart upload request into the upload service."""
    content_length = request.headers.get("content-length")
    too_long = content_length is not None and content_length.isdigit()
    if too_long and int(content_length or 0) > service.limits.max_file_size + MULTIPART_OVERHEAD:
        raise FileTooLarge(
            f"The request is {content_length} bytes; files are limited to {service.limits.max_file_size} bytes."
        )
    try:
        parser = StreamingFormDataParser(headers=request.headers)
    except ParseFailedException as exc:
        raise MalformedMultipart(f"Send the upload as multipart/form-data with a 'file' part ({exc}).") from exc
    fields = {name: _FieldTarget(name, limit) for name, limit in FIELD_LIMITS.items()}
    for name, target in fields.items():
        parser.register(name, target)
    file_target = _FileTarget(principal, service, fields)
    parser.register("file", file_target)

    try:
        async for data in request.stream():
            await parser.adata_received(data)
        if file_target.plan is None:
            raise MissingFile("The request has no 'file' part.")
        if not file_target.done:
            raise MalformedMultipart("The multipart body ended before the file part was complete.")
        late = {name for name, t in fields.items() if t.seen} - file_target.fields_seen_at_start
        if late:
            raise BadRequest(
                f"Form fields {sorted(late)} came after the file; send every field before the 'file' part."
            )
        assert file_target.sink is not None
        result = await file_target.sink.finish()
    except BaseException as exc:
        await _abandon(file_target)
        if isinstance(exc, ParseFailedException):
            raise MalformedMultipart(f"The multipart body could not be parsed: {exc}.") from exc
        if isinstance(exc, VidgateError):
            await _drain(request, DRAIN_LIMIT)
        raise
    return await run_in_threadpool(service.finish_chunk, file_target.plan, result)


async def _abandon(target: _FileTarget) -> None:
    if target.sink is not None:
        await target.sink.abort()
    if target.plan is not None:
        await run_in_threadpool(target.service.abort_chunk, target.plan)


@router.post(
    "/video",
    response_model=Envelope[ChunkReceipt],
    responses=ERROR_RESPONSES,
    openapi_extra=_UPLOAD_FORM_SCHEMA,
    summary="Upload a whole video, or one chunk of a session",
)
async def upload_video(request: Request, principal: CurrentUser, services: ServicesDep) -> Envelope[ChunkReceipt]:
    receipt = await receive_upload(request, principal, services.uploads)
    if receipt.status == "completed":
        message = "Upload complete"
    elif receipt.duplicate_chunk:
        message = f"Chunk {receipt.chunk_index} was already received"
    else:
        message = f"Chunk {receipt.chunk_index} received ({receipt.chunks_received}/{receipt.total_chunks})"
    return Envelope(data=receipt, message=message)


@router.get(
    "/video/session/{session_id}",
    response_model=Envelope[SessionView],
    responses=ERROR_RESPONSES,
    summary="Session status: chunks received and missing, progress",
)
def get_session(session_id: str, principal: CurrentUser, services: ServicesDep) -> Envelope[SessionView]:
    return Envelope(data=services.uploads.get_session(principal, session_id))


@router.delete(
    "/video/session/{session_id}",
    response_model=Envelope[SessionView],
    responses=ERROR_RESPONSES,
    summary="Cancel a session and delete its data",
)
def cancel_session(session_id: str, principal: CurrentUser, services: ServicesDep) -> Envelope[SessionView]:
    view = services.uploads.cancel_session(principal, session_id)
    return Envelope(data=view, message="Upload session cancelled and cleaned up")
