"""The seed's upload API: POST /v1/upload/video, GET/DELETE /v1/upload/video/session/{id}.

The multipart body is parsed as it streams in (python-multipart): the form fields
that precede the file part are read first, then the file's bytes go straight to their
offset in the session's part file. Nothing is spooled, so each byte is written once.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request
from starlette.concurrency import run_in_threadpool

from vidgate.api.deps import CurrentUser, ServicesDep, Uploader
from vidgate.api.multipart import Event, MultipartEvents, PartData, PartStart
from vidgate.api.receiving import after_answer, receiving
from vidgate.api.schemas import Envelope, ErrorEnvelope
from vidgate.auth import Principal
from vidgate.errors import (
    BadRequest,
    FileTooLarge,
    InvalidOptions,
    InvalidParameter,
    MalformedMultipart,
    MissingFile,
)
from vidgate.processing.models import VideoAnalysisResult
from vidgate.uploads.chunked import ChunkedUploads
from vidgate.uploads.models import ChunkReceipt, ChunkRequest, SessionView
from vidgate.uploads.writer import ChunkSink
from vidgate.uploads.writing import WritePlan

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


class _Field:
    """A small form field, kept in memory up to a hard limit."""

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self.value = bytearray()
        self.seen = False

    def append(self, data: bytes) -> None:
        if len(self.value) + len(data) > self.limit:
            raise InvalidParameter(f"Form field {self.name!r} is longer than {self.limit} bytes.")
        self.value += data

    @property
    def text(self) -> str | None:
        if not self.seen:
            return None
        try:
            return self.value.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise InvalidParameter(f"Form field {self.name!r} is not UTF-8 text.") from exc


class _UploadReader:
    """Consumes multipart events: fields first, then the file part streamed into a chunk sink."""

    def __init__(self, principal: Principal, service: ChunkedUploads) -> None:
        self.principal = principal
        self.service = service
        self.fields = {name: _Field(name, limit) for name, limit in FIELD_LIMITS.items()}
        self.fields_seen_at_start: set[str] = set()
        self.current: _Field | None = None
        self.in_file = False
        self.plan: WritePlan | None = None
        self.sink: ChunkSink | None = None
        self.done = False

    async def handle(self, event: Event) -> None:
        if isinstance(event, PartData):
            if self.in_file:
                assert self.sink is not None
                await self.sink.write(event.data)
            elif self.current is not None:
                self.current.append(event.data)
        elif isinstance(event, PartStart):
            if event.name == "file":
                await self._start_file(event)
            else:
                self.current = self.fields.get(event.name)
                if self.current is not None:
                    self.current.seen = True
        elif self.in_file:  # PartEnd
            self.in_file, self.done = False, True
        else:
            self.current = None

    async def _start_file(self, event: PartStart) -> None:
        if self.plan is not None:
            raise BadRequest("Send exactly one file part per request.")
        self.fields_seen_at_start = {name for name, field in self.fields.items() if field.seen}
        request = _chunk_request(self.fields, event.filename, event.content_type)
        self.plan = await run_in_threadpool(self.service.begin_chunk, self.principal, request)
        self.sink = self.service.open_sink(self.plan)
        self.in_file = True

    def late_fields(self) -> set[str]:
        return {name for name, field in self.fields.items() if field.seen} - self.fields_seen_at_start

    async def abandon(self, error: BaseException) -> None:
        if self.sink is not None:
            await self.sink.abort()
        if self.plan is not None:
            await run_in_threadpool(self.service.abort_chunk, self.plan, error)


def _chunk_request(fields: dict[str, _Field], filename: str | None, content_type: str | None) -> ChunkRequest:
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


async def receive_upload(request: Request, principal: Principal, service: ChunkedUploads) -> ChunkReceipt:
    """Stream one multipart upload request into the upload service."""
    content_length = request.headers.get("content-length")
    too_long = content_length is not None and content_length.isdigit()
    if too_long and int(content_length or 0) > service.limits.max_file_size + MULTIPART_OVERHEAD:
        raise FileTooLarge(
            f"The request is {content_length} bytes; files are limited to {service.limits.max_file_size} bytes."
        )
    events = MultipartEvents(request.headers.get("content-type", ""))
    reader = _UploadReader(principal, service)
    async with receiving(request, reader.abandon):
        async for data in request.stream():
            for event in events.feed(data):
                await reader.handle(event)
        if reader.plan is None:
            raise MissingFile("The request has no 'file' part.")
        if not reader.done or not events.complete:
            raise MalformedMultipart("The multipart body ended before the file part was complete.")
        late = reader.late_fields()
        if late:
            raise BadRequest(
                f"Form fields {sorted(late)} came after the file; send every field before the 'file' part."
            )
        assert reader.sink is not None
        result = await reader.sink.finish()
    return await run_in_threadpool(service.finish_chunk, reader.plan, result)


class UploadResponse(ChunkReceipt):
    """A chunk receipt; when the upload completed as known content, the cached result too."""

    result: VideoAnalysisResult | None = None


@router.post(
    "/video",
    response_model=Envelope[UploadResponse],
    responses=ERROR_RESPONSES,
    openapi_extra=_UPLOAD_FORM_SCHEMA,
    summary="Upload a whole video, or one chunk of a session",
)
async def upload_video(
    request: Request, principal: Uploader, services: ServicesDep, background: BackgroundTasks
) -> Envelope[UploadResponse]:
    with after_answer() as later:
        receipt = await receive_upload(request, principal, services.uploads)
        response = UploadResponse(**receipt.model_dump())
        answer_from_cache = services.settings.upload.enable_deduplication
        if receipt.status == "completed" and receipt.duplicate and receipt.video_id and answer_from_cache:
            response.result = await run_in_threadpool(services.processing.owner_result, receipt.video_id)
        if later.later:
            background.add_task(later.run)
    if receipt.status == "completed":
        message = "Upload complete" + (": known content, answered from the stored result" if response.result else "")
    elif receipt.duplicate_chunk:
        message = f"Chunk {receipt.chunk_index} was already received"
    else:
        message = f"Chunk {receipt.chunk_index} received ({receipt.chunks_received}/{receipt.total_chunks})"
    return Envelope(data=response, message=message)


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
def cancel_session(session_id: str, principal: Uploader, services: ServicesDep) -> Envelope[SessionView]:
    view = services.uploads.cancel_session(principal, session_id)
    return Envelope(data=view, message="Upload session cancelled and cleaned up")
