"""The library: the caller's videos listed, their bytes played, their pictures, their reviews.

``GET /v1/videos`` (cursor pages), ``GET /v1/videos/{id}/content`` (HTTP Range, so a browser
``<video>`` can seek), ``poster.jpg`` / ``storyboard.jpg`` / ``storyboard.json``,
``POST /v1/videos/{id}/review`` and ``DELETE /v1/videos/{id}``. Ownership always comes from
:mod:`vidgate.library.owners`. Content and pictures open with the key or with a signed URL
(:mod:`vidgate.library.signing`: what a ``<video>`` element, which sends no header, can use).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
from collections.abc import Callable, Coroutine, Iterator
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field, PrivateAttr
from starlette.concurrency import run_in_threadpool
from starlette.responses import MalformedRangeHeader
from starlette.responses import RangeNotSatisfiable as StarletteRangeNotSatisfiable
from starlette.types import Receive, Scope, Send

from vidgate.api import deps
from vidgate.api.deps import Reader, Reviewer, Services, ServicesDep, require
from vidgate.api.http_protocol import ZEROCOPY_SEND
from vidgate.api.schemas import Envelope, ErrorEnvelope
from vidgate.auth import Principal
from vidgate.config import LibrarySettings
from vidgate.db.engine import Database
from vidgate.db.models import VideoStatus
from vidgate.errors import (
    InvalidParameter,
    InvalidRange,
    InvalidUrlSignature,
    PictureNotReady,
    RangeNotSatisfiable,
    VideoNotFound,
)
from vidgate.library import listing, reviews
from vidgate.library.deletion import DeletedVideo, deleter_for
from vidgate.library.listing import LibraryPage, LibraryQuery, ReviewFilter
from vidgate.library.owners import ServedVideo, WouldWait, served_video, served_video_now
from vidgate.library.reviews import ReviewHistory, ReviewRequest, ReviewView
from vidgate.library.signing import SignedUrls, UrlSigner
from vidgate.processing.stages import POSTER, STORYBOARD, STORYBOARD_INDEX
from vidgate.roles import Permission, Role
from vidgate.storage import BlobStore

router = APIRouter(prefix="/v1/videos", tags=["library"])
ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorEnvelope} for status in (401, 403, 404)}
#: routes that also open with a signed URL: a malformed exp/sig is a 400 invalid_parameter
SIGNED_ERRORS: dict[int | str, dict[str, Any]] = {**ERRORS, 400: {"model": ErrorEnvelope}}

#: The validated container (media_info.container) -> the type browsers play it as.
CONTAINER_MEDIA_TYPES = {
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "avi": "video/x-msvideo",
    "matroska": "video/x-matroska",
    "webm": "video/webm",
    "ogg": "video/ogg",
}
CONTENT_CACHE = "private, max-age=3600"  # per-key content: browsers may keep it, shared caches not


#: A caller whose key may delete videos (uploader, admin: a viewer or reviewer may not).
Deleter = Annotated[Principal, Depends(require(Permission.DELETE))]


#: one signer per settings object (its HMAC key set up once, not per request)
_SIGNERS: dict[int, tuple[LibrarySettings, UrlSigner]] = {}


def signer(services: Services) -> UrlSigner:
    settings = services.settings.library
    known = _SIGNERS.get(id(settings))
    if known is None or known[0] is not settings:
        known = _SIGNERS[id(settings)] = (settings, UrlSigner.from_settings(settings))
    return known[1]


class SignedPrincipal(Principal):
    """The owner a signed URL stands for, with the video it looked up to verify it (so the
    request reads the database once, as with a key)."""

    _owned: ServedVideo | None = PrivateAttr(None)


async def reader_or_signed(
    video_id: str,
    request: Request,
    services: ServicesDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(deps._bearer)],
    api_key: Annotated[str | None, Depends(deps._api_key)],
    exp: Annotated[int | None, Query(description="Signed URL: its expiry (Unix seconds).")] = None,
    sig: Annotated[str | None, Query(max_length=128, description="Signed URL: its signature.")] = None,
) -> Principal:
    """The key (any role may read), or a signed URL of this video (``exp`` and ``sig``), which
    stands for the video's owner with read access alone."""
    if exp is None and sig is None:
        principal = await deps.current_user(request, services, bearer, api_key)
        principal.check(Permission.READ)
        return principal
    if exp is None or sig is None:
        raise InvalidUrlSignature("A signed URL carries both exp and sig.")
    found = await run_in_threadpool(served_video, services.db, video_id, None)  # whoever owns it
    # An unknown video fails as a bad signature does: the answer tells nothing of which ids exist.
    signer(services).verify(video_id, found.user_id if found else "", exp, sig)
    if found is None:
        raise InvalidUrlSignature("This URL's signature does not match: ask for a fresh one.")
    signed = SignedPrincipal(user_id=found.user_id, username="", key_id=None, role=Role.VIEWER)
    signed._owned = found
    return signed


ReaderOrSigned = Annotated[Principal, Depends(reader_or_signed)]


def _owned(services: Services, principal: Principal, video_id: str) -> ServedVideo:
    found = principal._owned if isinstance(principal, SignedPrincipal) else None
    if found is not None and found.video_id == video_id:
        return found  # looked up (and its owner checked) by reader_or_signed
    owned = served_video(services.db, video_id, principal.user_id)
    if owned is None:
        raise VideoNotFound(f"No video {video_id!r}.")
    return owned


def _blobs(services: Services) -> BlobStore:
    return services.processing.blobs


def media_type(owned: ServedVideo) -> str:
    container = owned.container or ""
    return CONTAINER_MEDIA_TYPES.get(container, "application/octet-stream")


def etag_matches(header: str | None, etag: str) -> bool:
    """If-None-Match: weak comparison against any listed tag, or ``*``."""
    if not header:
        return False
    tags = [tag.strip() for tag in header.split(",")]
    return "*" in tags or any(tag.removeprefix("W/") == etag for tag in tags)


#: the one range a player sends (``bytes=N-`` or ``bytes=N-M``), parsed without Starlette's general parser
_ONE_RANGE = re.compile(r"bytes=(\d{1,19})-(\d{0,19})")


def parse_range(header: str, size: int) -> list[tuple[int, int]]:
    """The ``(start, end)`` byte ranges (end exclusive) of a Range header, as Starlette's
    FileResponse will serve them; a malformed or unsatisfiable one becomes our JSON error
    instead of Starlette's plain-text answer. [] means "serve it whole" (too many ranges).
    A player's one satisfiable range is read by a regular expression; all else by Starlette."""
    if (one := _ONE_RANGE.fullmatch(header.strip())) is not None:
        start = int(one[1])
        end = min(int(one[2]) + 1, size) if one[2] else size
        if start < size and start < end:
            return [(start, end)]
    try:
        return FileResponse._parse_range_header(header, size)
    except MalformedRangeHeader as exc:
        raise InvalidRange(f"Range {header!r} is not a valid byte range: {exc.content}") from exc
    except StarletteRangeNotSatisfiable as exc:
        raise RangeNotSatisfiable(f"Range {header!r} lies past the end of the {size}-byte file.", size=size) from exc


@functools.lru_cache(maxsize=4096)  # quoting a name cost ~10 µs, an eighth of a player's seek
def _content_disposition(filename: str | None) -> str:
    if not filename:
        return "inline"
    return f"inline; filename*=utf-8''{quote(filename)}"


class ContentRoute(APIRoute):
    """The content route as FastAPI declares it (its parameters, security and answers in the
    OpenAPI schema, from :func:`get_content`'s signature), answered by :func:`serve_content`
    without FastAPI's dependency solving: a player makes a request per seek, and solving the
    five dependencies cost more than the lookup (py-spy, bench/library.py)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return serve_content

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """:func:`serve_content` straight, without FastAPI's per-request wrapping (two exit
        stacks, a body limit for a body a GET has not, a second exception wrapper): its errors
        go to the app's one exception middleware, which maps them as it maps every route's."""
        if not self.methods or scope["method"] not in self.methods:
            await super().handle(scope, receive, send)  # 405, as FastAPI answers it
            return
        response = await serve_content(Request(scope, receive, send))
        await response(scope, receive, send)


async def get_content(video_id: str, request: Request, principal: ReaderOrSigned, services: ServicesDep) -> Response:
    """The schema's declaration of the content route (never run by it: see ContentRoute)."""
    return await serve_content(request)


async def serve_content(request: Request) -> Response:
    """``GET /v1/videos/{id}/content`` with the key or a signed URL, as :func:`reader_or_signed`
    and :func:`get_content` declare it. On SQLite with a cached key (or a signed URL) nothing
    leaves the event loop: the ownership check is one read that cannot wait
    (:func:`~vidgate.library.owners.served_video_now`) and the stored file is opened here;
    otherwise one thread hop authenticates, looks up and opens. Every request reads the
    database: a deleted video, or another owner's, is never served."""
    services: Services = request.app.state.services
    video_id: str = request.path_params["video_id"]
    signature = _signature_of(request)
    blobs = _blobs(services)
    principal = None
    key = None
    if signature is None:
        key = deps.api_key_in(request.headers)
        principal = services.keys.cached(key)
    opened = None
    if principal is not None or signature is not None:
        try:
            opened = _open_content(services, blobs, principal, video_id, signature, served_video_now)
        except WouldWait:
            opened = None
    if opened is None:
        opened = await run_in_threadpool(_authorised_and_opened, services, blobs, key, principal, video_id, signature)
    owned, fd = opened
    try:
        response = await _content_response(request, blobs, owned, fd)
    except BaseException:
        if fd is not None:
            os.close(fd)
        raise
    if fd is not None and not isinstance(response, StoredFileResponse):
        os.close(fd)  # answered without it (304, several ranges); a StoredFileResponse closes its own
    return response


def _signature_of(request: Request) -> tuple[int, str] | None:
    """``exp`` and ``sig`` of a signed URL, checked as the declared query parameters are."""
    if not request.scope.get("query_string"):
        return None
    query = request.query_params
    exp, sig = query.get("exp"), query.get("sig")
    if exp is None and sig is None:
        return None
    expires = None
    if exp is not None:
        try:
            expires = int(exp.strip())
        except ValueError:
            raise InvalidParameter("exp: Input should be a valid integer") from None
    if sig is not None and len(sig) > 128:
        raise InvalidParameter("sig: String should have at most 128 characters")
    if expires is None or sig is None:
        raise InvalidUrlSignature("A signed URL carries both exp and sig.")
    return expires, sig


def _authorised_and_opened(
    services: Services,
    blobs: BlobStore,
    key: str | None,
    principal: Principal | None,
    video_id: str,
    signature: tuple[int, str] | None,
) -> tuple[ServedVideo, int | None]:
    """The one thread hop: the key from the database if it was not cached, the lookup, the open."""
    if signature is None and principal is None:
        principal = services.keys.authenticate(key)
    return _open_content(services, blobs, principal, video_id, signature, served_video)


def _open_content(
    services: Services,
    blobs: BlobStore,
    principal: Principal | None,
    video_id: str,
    signature: tuple[int, str] | None,
    lookup: Callable[[Database, str, str | None], ServedVideo | None],
) -> tuple[ServedVideo, int | None]:
    """The caller's video ``video_id`` (with the key: theirs; with a signed URL: the one it was
    signed for, as its owner) and, on local disk, its file opened (no stat: the size is the
    database's). A signed URL of an unknown video fails as a bad signature does (no oracle)."""
    if signature is None:
        assert principal is not None
        principal.check(Permission.READ)
        owned = lookup(services.db, video_id, principal.user_id)
        if owned is None:
            raise VideoNotFound(f"No video {video_id!r}.")
    else:
        found = lookup(services.db, video_id, None)  # whoever owns it
        signer(services).verify(video_id, found.user_id if found else "", *signature)
        if found is None:
            raise InvalidUrlSignature("This URL's signature does not match: ask for a fresh one.")
        owned = found
    path = blobs.local_path(owned.storage_key)
    if path is None:
        return owned, None
    try:
        return owned, os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:  # withdrawn by a delete of its last owner in this very moment
        raise VideoNotFound(f"No video {video_id!r}.") from None


_CONTENT_ROUTE: dict[str, Any] = {
    "route_class_override": ContentRoute,
    "response_class": Response,
    "responses": {
        **SIGNED_ERRORS,
        206: {"description": "The requested byte range"},
        304: {"description": "Not modified"},
    },
    "summary": "The original bytes, with Range, ETag (the SHA-256) and If-None-Match",
}
router.add_api_route("/{video_id}/content", get_content, methods=["GET"], **_CONTENT_ROUTE)
router.add_api_route("/{video_id}/content", get_content, methods=["HEAD"], include_in_schema=False, **_CONTENT_ROUTE)
#: the content route's template (its metrics label; :mod:`vidgate.api.content_shortcut` matches it)
CONTENT_PATH = router.prefix + "/{video_id}/content"


async def _content_response(request: Request, blobs: BlobStore, owned: ServedVideo, fd: int | None) -> Response:
    etag = f'"{owned.content_hash}"'
    headers = {
        "ETag": etag,
        "Cache-Control": CONTENT_CACHE,
        "Content-Disposition": _content_disposition(owned.filename),
        "X-Content-Type-Options": "nosniff",
    }
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": CONTENT_CACHE})
    ranges: list[tuple[int, int]] = []
    range_header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if range_header is not None and (if_range is None or if_range.strip() == etag):
        ranges = parse_range(range_header, owned.file_size)
    if fd is None:  # a store without local files (S3)
        return await _streamed(blobs, owned.storage_key, owned.file_size, ranges, media_type(owned), headers)
    if len(ranges) > 1 and (path := blobs.local_path(owned.storage_key)) is not None:
        # Several ranges (rare: no player sends them): Starlette's multipart/byteranges answer.
        return FileResponse(path, media_type=media_type(owned), headers=headers)
    byte_range = ranges[0] if ranges else None
    return StoredFileResponse(fd, owned.file_size, byte_range, media_type(owned), headers, request.method == "HEAD")


#: Bytes per read of a stored file and per body message: each request holds at most one.
SERVE_CHUNK = 1 << 20


class StoredFileResponse(Response):
    """A local stored file, whole (200) or one byte range (206), from a descriptor opened with
    the request's lookup. Under ``vidgate serve`` the server sends it with ``sendfile`` (the
    ASGI zero-copy extension, :mod:`vidgate.api.http_protocol`); elsewhere it is read in
    pieces of up to :data:`SERVE_CHUNK`: on the event loop when the page cache holds the bytes
    (:func:`read_cached`), else one ``pread`` per thread hop.

    Starlette's FileResponse stats the file, opens it, seeks, reads 64 KiB per thread hop and
    closes it, each a hop of its own: ~20 hops for a 1 MiB range, where this makes none or one.
    The size is the database's (stored files are content-addressed: they never change)."""

    def __init__(
        self, fd: int, size: int, byte_range: tuple[int, int] | None, kind: str, headers: dict[str, str], head: bool
    ) -> None:
        self.fd = fd
        self.start, self.end = byte_range if byte_range is not None else (0, size)
        self.head = head
        # The headers as Response.__init__ would make them, built straight: this runs per seek.
        self.status_code = 206 if byte_range is not None else 200
        self.media_type = kind
        self.background = None
        raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
        raw.append((b"accept-ranges", b"bytes"))
        raw.append((b"content-length", str(self.end - self.start).encode()))
        if byte_range is not None:
            raw.append((b"content-range", f"bytes {self.start}-{self.end - 1}/{size}".encode()))
        raw.append((b"content-type", kind.encode("latin-1")))
        self.raw_headers = raw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone: asyncio.Task[None] | None = None
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            if self.head or self.start == self.end:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            if ZEROCOPY_SEND in scope.get("extensions", {}):  # vidgate serve: the kernel sends it
                count = self.end - self.start
                await send({"type": ZEROCOPY_SEND, "file": self.fd, "offset": self.start, "count": count})
                return
            if self.end - self.start > SERVE_CHUNK:
                # A client that leaves mid-file: stop reading (uvicorn drops what is sent after).
                gone = asyncio.ensure_future(_disconnect(receive))
            offset = self.start
            while offset < self.end:
                size = min(SERVE_CHUNK, self.end - offset)
                chunk = read_cached(self.fd, size, offset)
                if chunk is None:  # (some of) it is on disk: wait for it in a worker thread
                    chunk = await anyio.to_thread.run_sync(os.pread, self.fd, size, offset)
                if not chunk:
                    raise RuntimeError(f"stored file shorter than its recorded size ({offset} of {self.end})")
                offset += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": offset < self.end})
                if gone is not None and gone.done():
                    return
        finally:
            if gone is not None:
                gone.cancel()
            os.close(self.fd)


_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)


def read_cached(fd: int, size: int, offset: int) -> bytes | bytearray | None:
    """Up to ``size`` bytes at ``offset`` if the page cache holds them, read on the event loop
    without waiting for a disk (``preadv`` with ``RWF_NOWAIT``: a memory copy, cheaper than the
    thread hop); None when the first byte is not cached or the system cannot say (then a
    worker thread reads). A stored video being played is nearly always cached."""
    if _NOWAIT is None:
        return None
    buffer = bytearray(size)
    try:
        got = os.preadv(fd, [buffer], offset, _NOWAIT)
    except OSError:  # EAGAIN: not cached; EOPNOTSUPP: a filesystem without it
        return None
    if got <= 0:
        return None
    return buffer if got == size else bytes(memoryview(buffer)[:got])


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _streamed(
    blobs: BlobStore, key: str, size: int, ranges: list[tuple[int, int]], kind: str, headers: dict[str, str]
) -> Response:
    """A store without local files (S3): one range as 206, anything else whole (RFC 9110 lets a
    server ignore a multi-range request)."""
    headers = {**headers, "Accept-Ranges": "bytes"}
    start, end, status = 0, size, 200
    if len(ranges) == 1:
        (start, end), status = ranges[0], 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    body = await _started(blobs.read_range(key, start, end))
    return StreamingResponse(body, status_code=status, media_type=kind, headers=headers)


async def _started(body: Iterator[bytes]) -> Iterator[bytes]:
    """``body`` with its first chunk read now: the store's request is made before the answer's
    status is sent, so a store that is down answers 503 (storage_unavailable), not a cut 200."""
    first = await run_in_threadpool(next, body, b"")

    def chained() -> Iterator[bytes]:
        yield first
        yield from body

    return chained()


# ------------------------------------------------------------------ reviews
@router.post(
    "/{video_id}/review",
    response_model=Envelope[ReviewView],
    responses={**ERRORS, 400: {"model": ErrorEnvelope}},
    summary="Record a review decision (approved, rejected, escalated) with a note",
)
def post_review(video_id: str, body: ReviewRequest, principal: Reviewer, services: ServicesDep) -> Envelope[ReviewView]:
    view = reviews.record(
        services.db,
        principal,
        video_id,
        body,
        note_max_length=services.settings.library.review_note_max_length,
        events=services.events,
    )
    return Envelope(data=view, message=f"Video {view.decision.value}")


@router.get(
    "/{video_id}/reviews",
    response_model=Envelope[ReviewHistory],
    responses=ERRORS,
    summary="The review state and every decision, newest first",
)
def get_reviews(video_id: str, principal: Reader, services: ServicesDep) -> Envelope[ReviewHistory]:
    return Envelope(data=reviews.history(services.db, principal, video_id))


# ------------------------------------------------------------------ listing
@router.get(
    "",
    response_model=Envelope[LibraryPage],
    responses={**ERRORS, 400: {"model": ErrorEnvelope}},
    summary="Your videos, newest first, in cursor pages, with filters",
)
def list_videos(
    principal: Reader,
    services: ServicesDep,
    limit: Annotated[int | None, Query(description="Videos per page (default LIBRARY_PAGE_SIZE).")] = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
    status: VideoStatus | None = None,
    review: ReviewFilter | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    filename: Annotated[str | None, Query(max_length=255, description="File name contains (any case).")] = None,
    content_hash: str | None = None,
) -> Envelope[LibraryPage]:
    settings = services.settings.library
    query = LibraryQuery(
        limit=settings.page_size if limit is None else limit,
        cursor=cursor,
        status=status,
        review=review,
        created_after=created_after,
        created_before=created_before,
        filename=filename or None,
        content_hash=content_hash,
    )
    sign = signer(services).for_owner(principal.user_id)
    page = listing.page(services.db, principal.user_id, query, max_limit=settings.max_page_size, sign=sign)
    return Envelope(data=page)


# ------------------------------------------------------------------ pictures
def _picture(services: Services, principal: Principal, video_id: str, name: str) -> tuple[ServedVideo, str, int]:
    """The video's derived file ``name``: its store key and size (PictureNotReady if there is none)."""
    owned = _owned(services, principal, video_id)
    blobs = _blobs(services)
    key = blobs.derived_key(owned.content_hash, name)  # per content: shared by every owner
    try:
        size = blobs.size(key)
    except FileNotFoundError:
        done = owned.status is VideoStatus.COMPLETED
        why = "it was processed before pictures were made: process it again" if done else "it is not processed yet"
        raise PictureNotReady(f"Video {video_id!r} has no {name}: {why} (status {owned.status.value}).") from None
    return owned, key, size


async def _picture_response(services: Services, principal: Principal, video_id: str, name: str) -> Response:
    _, key, size = await run_in_threadpool(_picture, services, principal, video_id, name)
    blobs = _blobs(services)
    headers = {"Cache-Control": CONTENT_CACHE}
    path = blobs.local_path(key)
    if path is not None:
        return FileResponse(path, media_type="image/jpeg", headers=headers)
    return await _streamed(blobs, key, size, [], "image/jpeg", headers)


PICTURE_RESPONSES: dict[int | str, dict[str, Any]] = {**SIGNED_ERRORS, 409: {"model": ErrorEnvelope}}


@router.get(
    "/{video_id}/poster.jpg",
    response_class=FileResponse,
    responses=PICTURE_RESPONSES,
    summary="A poster JPEG: the frame nearest the middle that is not black",
)
async def get_poster(video_id: str, principal: ReaderOrSigned, services: ServicesDep) -> Response:
    return await _picture_response(services, principal, video_id, POSTER)


@router.get(
    "/{video_id}/storyboard.jpg",
    response_class=FileResponse,
    responses=PICTURE_RESPONSES,
    summary="The storyboard sprite: sampled frames as tiles, left to right, top to bottom",
)
async def get_storyboard(video_id: str, principal: ReaderOrSigned, services: ServicesDep) -> Response:
    return await _picture_response(services, principal, video_id, STORYBOARD)


class StoryboardTile(BaseModel):
    start: float = Field(description="Seconds into the video the tile shows.")
    x: int
    y: int


class Storyboard(BaseModel):
    url: str = Field(description="The sprite the tiles are cut from.")
    tile_width: int
    tile_height: int
    columns: int
    rows: int
    duration: float
    tiles: list[StoryboardTile]


def _storyboard(services: Services, principal: Principal, video_id: str, signed: str = "") -> Storyboard:
    _, key, size = _picture(services, principal, video_id, STORYBOARD_INDEX)
    # small: at most LIBRARY_STORYBOARD_MAX_TILES tiles
    index = json.loads(b"".join(_blobs(services).read_range(key, 0, size)))
    return Storyboard(url=f"/v1/videos/{video_id}/storyboard.jpg{signed}", **index)


@router.get(
    "/{video_id}/storyboard.json",
    response_model=Storyboard,
    responses=PICTURE_RESPONSES,
    summary="The storyboard index: where each tile sits in the sprite and the time it shows",
)
def get_storyboard_index(
    video_id: str,
    principal: ReaderOrSigned,
    services: ServicesDep,
    exp: int | None = None,
    sig: str | None = None,
) -> Storyboard:
    # fetched through a signed URL: the sprite's URL is signed the same way (an <img> shows it)
    signed = f"?exp={exp}&sig={sig}" if exp is not None and sig is not None else ""
    return _storyboard(services, principal, video_id, signed)


# ------------------------------------------------------------------ signed URLs
@router.get(
    "/{video_id}/urls",
    response_model=Envelope[SignedUrls],
    responses=ERRORS,
    summary="Signed URLs of the content and pictures, for a <video> or <img> (which send no key)",
)
def get_urls(video_id: str, principal: Reader, services: ServicesDep) -> Envelope[SignedUrls]:
    _owned(services, principal, video_id)
    return Envelope(data=signer(services).urls(video_id, principal.user_id))


# ------------------------------------------------------------------ deleting
@router.delete(
    "/{video_id}",
    response_model=Envelope[DeletedVideo],
    responses=ERRORS,
    summary="Delete your video: its record, reviews and links; the stored bytes go with their last owner",
)
def delete_video(video_id: str, principal: Deleter, services: ServicesDep) -> Envelope[DeletedVideo]:
    deleted = deleter_for(services).delete(principal.user_id, video_id, key_id=principal.key_id)
    return Envelope(data=deleted, message="Video deleted")
