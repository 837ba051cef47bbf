"""``VidgateClient``: chunked, resumable, optionally parallel uploads to a running vidgate.

Why it is built this way:

* Each chunk streams from disk inside its request body (:mod:`vidgate.client.multipart`), so
  memory holds one block per request in flight, whatever the file or chunk size.
* The session id is made here and saved (:mod:`vidgate.client.state`) before the first byte
  goes out, so a run killed even during the first chunk can be continued: the next run asks
  the server for ``missing_chunks`` and sends only those.
* The SHA-256 is computed from the bytes as they are read for sending
  (:mod:`vidgate.client.hashing`). The last chunk goes out alone, after every other chunk was
  acknowledged, carrying the hash as ``file_hash``; the server's ``content_hash`` is then
  compared with it, so a corrupted upload is an error, never a silent success.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import httpx

from vidgate.client.errors import (
    ClientError,
    FileChanged,
    HashMismatch,
    RequestRefused,
    ServerUnreachable,
)
from vidgate.client.events import wait_for_video
from vidgate.client.hashing import BackgroundHash, StreamingHash
from vidgate.client.models import (
    ChunkReceipt,
    ProcessingOutcome,
    ProgressUpdate,
    SessionInfo,
    UploadResult,
    VideoAnalysisResult,
    VideoInfo,
)
from vidgate.client.multipart import FilePart, MultipartBody
from vidgate.client.state import StateStore, UploadState
from vidgate.config import CLIENT_API_KEY_ENV, CLIENT_URL_ENV

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_CHUNK_SIZE = 10 * 1024 * 1024  # the server's default UPLOAD_MAX_CHUNK_SIZE
UPLOAD = "/v1/upload/video"

# The server decides the format from the bytes; the declared type only has to agree with it.
CONTENT_TYPES = {
    "mp4": "video/mp4",
    "m4v": "video/x-m4v",
    "mov": "video/quicktime",
    "avi": "video/x-msvideo",
    "mkv": "video/x-matroska",
    "webm": "video/webm",
    "ogg": "video/ogg",
    "ogv": "video/ogg",
}

ProgressCallback = Callable[[ProgressUpdate], None]


def _content_type(filename: str) -> str:
    return CONTENT_TYPES.get(filename.rpartition(".")[2].lower(), "application/octet-stream")


def _refusal(response: httpx.Response, session_id: str | None = None) -> RequestRefused:
    """The server's ``{"error": {"code", "message"}}``, or a stand-in when the body is not ours."""
    code, message = "http_error", response.reason_phrase or "error"
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    return RequestRefused(response.status_code, code, message, session_id=session_id)


def _retryable(error: RequestRefused) -> bool:
    """Worth sending again unchanged: the chunk is being written by another request right now,
    or a proxy in front of the server hiccupped. Refusals and server bugs are not."""
    return error.code == "chunk_in_progress" or (error.status in (502, 503, 504) and error.code == "http_error")


class _Tracker:
    """Bytes and chunks sent so far, for the progress callback (called from worker threads).
    ``done_bytes`` / ``done_chunks`` were on the server before (a resume): reported as done from
    the first update, and as ``bytes_resumed`` so that no speed counts them."""

    def __init__(
        self, path: Path, size: int, total: int, done_bytes: int, done_chunks: int, callback: ProgressCallback | None
    ) -> None:
        self.path, self.size, self.total = path, size, total
        self.bytes_done, self.chunks_done = done_bytes, done_chunks
        self.bytes_resumed = done_bytes
        self.callback = callback
        self._partial: dict[int, int] = {}
        self._lock = threading.Lock()

    def _emit(self, phase: Literal["uploading", "verifying", "waiting"] | None = None) -> None:
        if phase is None:  # every byte out: the server is assembling and checking the file
            phase = "verifying" if self.bytes_done >= self.size and self.chunks_done < self.total else "uploading"
        if self.callback is not None:
            self.callback(
                ProgressUpdate(
                    self.path, self.bytes_done, self.size, self.chunks_done, self.total, phase, self.bytes_resumed
                )
            )

    def start(self) -> None:
        """The first update, before any byte goes out (hashing a resumed part can take a while)."""
        with self._lock:
            self._emit("uploading")

    def sent(self, index: int, count: int) -> None:
        with self._lock:
            self._partial[index] = self._partial.get(index, 0) + count
            self.bytes_done += count
            self._emit()

    def restart(self, index: int) -> None:
        """A chunk is sent again: what its failed attempt counted does not count."""
        with self._lock:
            self.bytes_done -= self._partial.pop(index, 0)

    def acknowledged(self, index: int) -> None:
        with self._lock:
            self._partial.pop(index, None)
            self.chunks_done += 1
            self._emit()

    def phase(self, phase: Literal["uploading", "verifying", "waiting"]) -> None:
        with self._lock:
            self._emit(phase)


class VidgateClient:
    """A connection to one vidgate server with one API key.

    ``base_url`` and ``api_key`` default to ``$VIDGATE_URL`` (else http://127.0.0.1:8000) and
    ``$VIDGATE_API_KEY``. ``state_dir`` holds the resume state (default
    ``$VIDGATE_CLIENT_STATE_DIR`` or ``~/.cache/vidgate/uploads``). Thread-safe; close it (or use
    it as a context manager) to release its connections.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        state_dir: Path | None = None,
        timeout: float = 600.0,
        retries: int = 4,
        retry_backoff: float = 0.5,
    ) -> None:
        key = api_key or os.environ.get(CLIENT_API_KEY_ENV)
        if not key:
            raise ClientError(f"no API key: pass one or set {CLIENT_API_KEY_ENV}")
        self.base_url = (base_url or os.environ.get(CLIENT_URL_ENV) or DEFAULT_URL).rstrip("/")
        self.headers = {"X-API-Key": key}
        self.retries = retries
        self.retry_backoff = retry_backoff
        self.state = StateStore(state_dir)
        self._answered = False  # has the server answered once? (then connection errors are worth retrying)
        # The last chunk's answer waits for assembly, validation and the probe: a long read timeout.
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={**self.headers, "User-Agent": "vidgate-client"},
            timeout=httpx.Timeout(timeout, connect=10.0),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ plain calls
    def _call(self, method: str, url: str, *, session_id: str | None = None, **kwargs: Any) -> Any:
        """One API call with retries on transport errors; the envelope's ``data``, or RequestRefused."""
        for attempt in range(self.retries + 1):
            try:
                response = self._http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                self._after_transport_error(exc, attempt)
                continue
            self._answered = True
            if response.is_success:
                return response.json().get("data")
            error = _refusal(response, session_id)
            if not _retryable(error) or attempt == self.retries:
                raise error
            time.sleep(self.retry_backoff * 2**attempt)
        raise AssertionError("unreachable")

    def _after_transport_error(self, exc: httpx.TransportError, attempt: int) -> None:
        """Wait before the next attempt, or give up: after the last retry, or at once when the server
        has never answered (a wrong URL or a server that is down should fail fast, not retry)."""
        if attempt == self.retries or (isinstance(exc, httpx.ConnectError) and not self._answered):
            raise ServerUnreachable(f"{self.base_url}: {exc or type(exc).__name__}") from exc
        time.sleep(self.retry_backoff * 2**attempt)

    def session(self, session_id: str) -> SessionInfo:
        """An upload session's state (``missing_chunks`` says what a resume must send)."""
        return SessionInfo.model_validate(self._call("GET", f"{UPLOAD}/session/{session_id}", session_id=session_id))

    def cancel(self, session_id: str) -> SessionInfo:
        """Cancel a session; the server deletes what it received."""
        return SessionInfo.model_validate(self._call("DELETE", f"{UPLOAD}/session/{session_id}", session_id=session_id))

    def video(self, video_id: str) -> VideoInfo:
        return VideoInfo.model_validate(self._call("GET", f"/v1/videos/{video_id}"))

    def result(self, video_id: str) -> VideoAnalysisResult:
        """The analysis result (RequestRefused ``result_not_ready`` until processing completed)."""
        return VideoAnalysisResult.model_validate(self._call("GET", f"/v1/videos/{video_id}/result"))

    def outcome(self, video_id: str) -> ProcessingOutcome | None:
        """How processing ended, or None while it is still queued or running."""
        video = self.video(video_id)
        if video.status == "completed":
            return ProcessingOutcome(video_id=video_id, status="completed", result=self.result(video_id))
        if video.status == "failed":
            return ProcessingOutcome(video_id=video_id, status="failed", error=video.error_message)
        return None

    def wait(
        self,
        video_id: str,
        *,
        timeout: float | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> ProcessingOutcome:
        """Follow the video's events on ``/ws`` until processing completed or failed (WaitTimeout after
        ``timeout`` seconds)."""
        return wait_for_video(
            self.base_url, self.headers, video_id, lambda: self.outcome(video_id), timeout=timeout, on_event=on_event
        )

    # ------------------------------------------------------------------ upload
    def upload(
        self,
        path: str | os.PathLike[str],
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        parallel: int = 1,
        priority: int | None = None,
        options: Mapping[str, Any] | None = None,
        wait: bool = False,
        wait_timeout: float | None = None,
        progress: ProgressCallback | None = None,
    ) -> UploadResult:
        """Upload one file (continuing an interrupted upload of it), and with ``wait`` its analysis.

        Raises RequestRefused with the server's code when the server refuses the file (the
        resume state is then dropped); any other error leaves the state, so calling again
        continues where this call stopped.
        """
        if chunk_size < 1 or parallel < 1:
            raise ValueError("chunk_size and parallel must be at least 1")
        path = Path(path).absolute()  # not resolve(): a symlink keeps the name it was given
        started = time.monotonic()
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise ClientError(f"{path}: {exc.strerror}") from exc
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                raise ClientError(f"{path}: not a regular file")
            state, missing, resumed, done = self._plan(path, before, chunk_size)
            fields = {
                "session_id": state.session_id,
                "total_chunks": str(state.total_chunks),
                "chunk_size": str(state.chunk_size),
                "file_size": str(before.st_size),
            }
            if priority is not None:
                fields["priority"] = str(priority)
            if options:
                fields["options"] = json.dumps(dict(options))
            hasher = StreamingHash(fd, before.st_size)
            received = set(range(state.total_chunks)) - set(missing)
            tracker = _Tracker(
                path,
                before.st_size,
                state.total_chunks,
                sum(self._length(state, before.st_size, i) for i in received),
                len(received),
                progress,
            )
            tracker.start()
            try:
                if done is None:
                    done = self._send_all(fd, path, before, state, missing, fields, hasher, tracker, parallel)
                    digest = hasher.hexdigest()
                else:
                    tracker.phase("verifying")
                    digest = hasher.hexdigest()
            except RequestRefused as exc:
                if exc.status < 500 and exc.code not in ("unauthenticated", "chunk_in_progress"):
                    self.state.forget(state)  # refused for good: the next run starts afresh
                raise
            self.state.forget(state)
            if done.content_hash != digest:
                raise HashMismatch(digest, done.content_hash or "(none)")
        finally:
            os.close(fd)
        assert done.video_id is not None
        cached = done.result if isinstance(done, ChunkReceipt) else None
        result = UploadResult(
            path=path,
            file_size=before.st_size,
            sha256=digest,
            session_id=state.session_id,
            video_id=done.video_id,
            duplicate=done.duplicate,
            chunk_size=state.chunk_size,
            total_chunks=state.total_chunks,
            chunks_sent=len(missing),
            resumed=resumed,
            seconds=round(time.monotonic() - started, 3),
            processing_status="completed" if cached is not None else None,
            result=cached,
        )
        if wait and result.result is None:
            tracker.phase("waiting")
            outcome = self.wait(done.video_id, timeout=wait_timeout)
            result.processing_status = outcome.status
            result.processing_error = outcome.error
            result.result = outcome.result
        return result

    @staticmethod
    def _length(state: UploadState, size: int, index: int) -> int:
        return max(0, min(state.chunk_size, size - index * state.chunk_size))

    def _plan(
        self, path: Path, info: os.stat_result, chunk_size: int
    ) -> tuple[UploadState, list[int], bool, SessionInfo | None]:
        """The session to use and the chunks it lacks: an earlier run's, or a new one."""
        state = self.state.load(self.base_url, str(path), info.st_size, info.st_mtime_ns)
        if state is not None:
            try:
                session = self.session(state.session_id)
            except RequestRefused as exc:
                if exc.code != "session_not_found":
                    raise
                session = None
            if session is not None and session.status == "assembling":
                session = self._await_assembly(state.session_id)
            if session is not None and session.status == "active" and not session.missing_chunks:
                session = self._await_assembly(state.session_id)  # its last chunk is being recorded
            if session is not None and session.total_chunks == state.total_chunks:
                if session.status == "active":
                    return state, sorted(session.missing_chunks), True, None
                if session.status == "completed":
                    return state, [], True, session
            self.state.forget(state)  # failed, cancelled, expired or gone: start afresh
        for old in self.state.others_for(self.base_url, str(path)):
            with contextlib.suppress(ClientError):  # an older version of the file: free its space
                self.cancel(old.session_id)
            self.state.forget(old)
        total = max(1, math.ceil(info.st_size / chunk_size))
        state = UploadState(
            server=self.base_url,
            path=str(path),
            size=info.st_size,
            mtime_ns=info.st_mtime_ns,
            session_id=f"cli-{uuid.uuid4().hex}",
            chunk_size=chunk_size,
            total_chunks=total,
        )
        self.state.save(state)
        return state, list(range(total)), False, None

    def _await_assembly(self, session_id: str, timeout: float = 120.0) -> SessionInfo:
        """The server is assembling (or re-checking) the file: wait for the verdict."""
        deadline = time.monotonic() + timeout
        while (session := self.session(session_id)).status == "assembling" or (
            session.status == "active" and not session.missing_chunks
        ):
            if time.monotonic() > deadline:
                raise ClientError(f"session {session_id} is still being assembled; try again later")
            time.sleep(0.5)
        return session

    def _send_all(
        self,
        fd: int,
        path: Path,
        before: os.stat_result,
        state: UploadState,
        missing: list[int],
        fields: dict[str, str],
        hasher: StreamingHash,
        tracker: _Tracker,
        parallel: int,
    ) -> ChunkReceipt | SessionInfo:
        """Every missing chunk but the last, then (hash known) the last with ``file_hash``."""
        *others, final = missing
        if parallel > 1 and len(others) > 1:
            self._send_parallel(fd, path, state, others, fields, hasher, tracker, parallel)
        else:
            for index in others:
                hasher.catch_up(index * state.chunk_size)  # hash what an earlier run sent
                self._send_chunk(fd, path, state, index, fields, hasher, tracker)
        digest = hasher.hexdigest()
        now = os.fstat(fd)
        if (now.st_size, now.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            raise FileChanged(f"{path} changed while it was being uploaded; run again to upload the new version")
        return self._send_chunk(fd, path, state, final, {**fields, "file_hash": digest}, hasher, tracker)

    def _send_parallel(
        self,
        fd: int,
        path: Path,
        state: UploadState,
        indexes: list[int],
        fields: dict[str, str],
        hasher: StreamingHash,
        tracker: _Tracker,
        parallel: int,
    ) -> None:
        """``parallel`` chunks in flight; the hash is caught up by a reader thread meanwhile.
        The first refusal stops new chunks; the refusal reported is the root cause."""
        background = BackgroundHash(hasher)
        stop = threading.Event()

        def send(index: int) -> None:
            if not stop.is_set():
                self._send_chunk(fd, path, state, index, fields, hasher, tracker)

        with ThreadPoolExecutor(parallel, thread_name_prefix="vidgate-upload") as pool:
            futures: list[Future[None]] = [pool.submit(send, index) for index in indexes]
            try:
                wait(futures, return_when=FIRST_EXCEPTION)
            except BaseException:  # KeyboardInterrupt: let the chunks in flight finish, send no more
                stop.set()
                background.stop()
                raise
            stop.set()
            for future in futures:
                future.cancel()
        errors = [e for f in futures if not f.cancelled() and (e := f.exception()) is not None]
        if errors:
            background.stop()
            root = next((e for e in errors if getattr(e, "code", None) != "session_not_active"), errors[0])
            raise root
        background.join()

    def _send_chunk(
        self,
        fd: int,
        path: Path,
        state: UploadState,
        index: int,
        fields: dict[str, str],
        hasher: StreamingHash,
        tracker: _Tracker,
    ) -> ChunkReceipt | SessionInfo:
        """POST one chunk, streamed from disk; retried after transport errors and transient refusals."""
        part = FilePart(
            fd=fd,
            offset=index * state.chunk_size,
            length=self._length(state, state.size, index),
            filename=path.name,
            content_type=_content_type(path.name),
        )

        def on_block(offset: int, block: memoryview) -> None:
            hasher.feed(offset, block)
            tracker.sent(index, len(block))

        for attempt in range(self.retries + 1):
            tracker.restart(index)
            body = MultipartBody({**fields, "chunk_index": str(index)}, part, on_block)
            try:
                response = self._http.post(
                    UPLOAD,
                    content=_iterate(body),
                    headers={"Content-Type": body.content_type, "Content-Length": str(len(body))},
                )
            except httpx.TransportError as exc:
                self._after_transport_error(exc, attempt)
                continue
            self._answered = True
            if response.is_success:
                tracker.acknowledged(index)
                return ChunkReceipt.model_validate(response.json()["data"])
            error = _refusal(response, state.session_id)
            if error.code == "session_not_active":
                return self._explain_inactive(state.session_id, error)
            if not _retryable(error) or attempt == self.retries:
                raise error
            time.sleep(self.retry_backoff * 2**attempt)
        raise AssertionError("unreachable")

    def _explain_inactive(self, session_id: str, error: RequestRefused) -> SessionInfo:
        """A chunk met a session that takes no more: it completed (an earlier attempt's answer was
        lost), is being assembled, or failed; for a failure, raise the reason it failed."""
        session = self.session(session_id)
        if session.status == "assembling":
            session = self._await_assembly(session_id)
        if session.status == "completed":
            return session
        if session.error_code:
            raise RequestRefused(error.status, session.error_code, session.error_message or "", session_id=session_id)
        raise error


def _iterate(body: MultipartBody) -> Iterator[bytes]:
    """A fresh generator per attempt (httpx consumes it once)."""
    yield from body
