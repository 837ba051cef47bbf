"""Where a job's analysis runs: in this process, or in an analysis child process.

The pipeline (PyAV decoding, NumPy, ONNX Runtime and the 23.6 MB open_nsfw network) costs its
process ~250 MiB. ``vidgate serve`` with the inline queue must not carry that in the API
process, so :class:`ChildAnalyser` runs every job of the process in one analysis child, forked
from multiprocessing's forkserver (the validation probe's warm server, which has PyAV imported)
on the first job and ended after ``PROCESSING_ANALYSIS_IDLE_SECONDS`` without one. The child
runs each job in a thread of its own, as the API process did, sharing one loaded network.

The parent keeps everything that is not the bytes: the lease and its renewal, the database
writes, the events. The child sends a job's progress reports as they come (the parent's job
thread writes them and publishes their events, as before) and its result or failure at the
end. A progress report that finds the lease lost makes the parent cancel the job; the child
stops it at its next report. A stored video that is not a local file (S3) is read by the child
through the parent (ranged reads over the pipe), so the child needs no credentials.

A child that dies (a crash in FFmpeg, the OOM killer, ``kill -9``) fails every job it ran with
:class:`AnalysisCrashed`, a transient error: each is retried with backoff like any other, and
fails for good after ``PROCESSING_MAX_RETRIES``. The next job starts a new child.

The Celery worker analyses in its pool process (:class:`InProcessAnalyser`): that process is
already a child of the worker, and Celery redelivers the job of one that dies.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import multiprocessing
import os
import queue
import resource
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from vidgate.processing.models import VideoAnalysisResult
from vidgate.processing.stages import PipelineConfig, PipelineError

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]
READ_BUFFER = 1 << 20  # the child's buffer over a remote file (one round trip per MiB read)
CANCEL_GRACE_SECONDS = 30.0  # a cancelled job that has not stopped by then has its child ended


class AnalysisCrashed(Exception):
    """The analysis process died, or a job in it failed for a reason other than the video (a
    transient error: the job is retried)."""


class Analyser(Protocol):
    def analyse(
        self,
        source: Path | BinaryIO,
        *,
        video_id: str,
        content_hash: str,
        model_type: str,
        config: PipelineConfig,
        progress: Progress,
        pictures_dir: Path,
    ) -> VideoAnalysisResult:
        """Analyse ``source`` (see :func:`vidgate.processing.pipeline.analyze`); raises
        :class:`PipelineError` for a video that cannot be decoded, whatever ``progress`` raised
        (the job stops), and other exceptions for transient failures."""
        ...

    def close(self) -> None: ...


class InProcessAnalyser:
    """The pipeline in the calling thread (Celery pool processes, tools, tests)."""

    def analyse(
        self,
        source: Path | BinaryIO,
        *,
        video_id: str,
        content_hash: str,
        model_type: str,
        config: PipelineConfig,
        progress: Progress,
        pictures_dir: Path,
    ) -> VideoAnalysisResult:
        # Imported on first use: PyAV, NumPy and the model libraries are the analysis's alone.
        from vidgate.processing.pipeline import analyze

        return analyze(
            source,
            video_id=video_id,
            content_hash=content_hash,
            model_type=model_type,
            config=config,
            progress=progress,
            pictures_dir=pictures_dir,
        )

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class ChildLimits:
    """How the analysis child limits itself (``PROCESSING_ANALYSIS_*``)."""

    memory_bytes: int = 0  # address space; 0: none
    nice: int = 0  # added to the child's CPU niceness
    idle_seconds: float = 60.0  # the child ends after this long without a job; 0: it stays


@dataclass(frozen=True)
class _Request:
    path: str | None  # a local file, or None: read through the parent
    size: int  # of the remote file
    video_id: str
    content_hash: str
    model_type: str
    config: PipelineConfig
    pictures_dir: str


class _Child:
    """One analysis child and the thread that reads its messages into each job's queue."""

    def __init__(self, context: Any, limits: ChildLimits) -> None:
        parent_end, child_end = context.Pipe(duplex=True)
        try:
            self.process: BaseProcess = context.Process(
                target=serve, args=(child_end, limits.memory_bytes, limits.nice), name="vidgate-analysis", daemon=True
            )
            self.process.start()
        except BaseException:
            parent_end.close()
            raise
        finally:
            child_end.close()
        self.connection: Connection = parent_end
        self.jobs: dict[int, queue.SimpleQueue[tuple[Any, ...]]] = {}
        self.lock = threading.Lock()  # jobs, sends, ``alive``
        self.alive = True
        self._reader = threading.Thread(target=self._read, name="vidgate-analysis-reader", daemon=True)
        self._reader.start()

    def send(self, message: tuple[Any, ...]) -> None:
        with self.lock:
            if not self.alive:
                raise AnalysisCrashed("the analysis process is gone")
            try:
                self.connection.send(message)
            except OSError as exc:
                raise AnalysisCrashed(f"the analysis process is gone ({exc})") from exc

    def _read(self) -> None:
        while True:
            try:
                message = self.connection.recv()
            except (EOFError, OSError):
                break
            kind, job, *rest = message
            with self.lock:
                waiting = self.jobs.get(job)
            if waiting is not None:
                waiting.put((kind, *rest))
        self.process.join(timeout=5)
        code = self.process.exitcode
        ended = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with {code}"
        with self.lock:
            self.alive = False
            orphans = list(self.jobs.values())
        if orphans:
            log.warning("the analysis process %s %s with %d jobs running", self.process.pid, ended, len(orphans))
        for waiting in orphans:
            waiting.put(("crashed", f"the analysis process {ended}"))

    def end(self) -> None:
        with self.lock:
            self.alive = False
        self.connection.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)


class ChildAnalyser:
    """Runs analyses in one analysis child of this process (see the module's docstring)."""

    def __init__(self, limits: ChildLimits) -> None:
        self.limits = limits
        self._context = multiprocessing.get_context("forkserver")
        self._lock = threading.Lock()
        self._child: _Child | None = None
        self._jobs = itertools.count(1)
        self._idle_timer: threading.Timer | None = None

    @property
    def pid(self) -> int | None:
        """The running child's process id (None while there is none)."""
        child = self._child
        return child.process.pid if child is not None and child.alive else None

    def _take(self, job: int) -> tuple[_Child, queue.SimpleQueue[tuple[Any, ...]]]:
        with self._lock:
            if self._idle_timer is not None:
                self._idle_timer.cancel()
                self._idle_timer = None
            child = self._child
            if child is None or not child.alive:
                if child is not None:
                    child.end()
                child = self._child = _Child(self._context, self.limits)
                log.info("analysis process %s started", child.process.pid)
            waiting: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
            with child.lock:
                child.jobs[job] = waiting
            return child, waiting

    def _release(self, child: _Child, job: int) -> None:
        with self._lock:
            with child.lock:
                child.jobs.pop(job, None)
                idle = not child.jobs
            if idle and child is self._child and self.limits.idle_seconds > 0:
                self._idle_timer = threading.Timer(self.limits.idle_seconds, self._end_if_idle, (child,))
                self._idle_timer.daemon = True
                self._idle_timer.start()

    def _end_if_idle(self, child: _Child) -> None:
        with self._lock:
            with child.lock:
                busy = bool(child.jobs)
            if busy or child is not self._child:
                return
            self._child = None
        log.info("analysis process %s ended after %.0f s without a job", child.process.pid, self.limits.idle_seconds)
        child.end()

    def analyse(
        self,
        source: Path | BinaryIO,
        *,
        video_id: str,
        content_hash: str,
        model_type: str,
        config: PipelineConfig,
        progress: Progress,
        pictures_dir: Path,
    ) -> VideoAnalysisResult:
        remote = not isinstance(source, Path)
        size = source.seek(0, io.SEEK_END) if not isinstance(source, Path) else 0
        request = _Request(
            path=None if remote else str(source),
            size=size,
            video_id=video_id,
            content_hash=content_hash,
            model_type=model_type,
            config=config,
            pictures_dir=str(pictures_dir),
        )
        job = next(self._jobs)
        child, waiting = self._take(job)
        try:
            child.send(("analyse", job, request))
            return self._follow(child, job, waiting, source, progress)
        finally:
            self._release(child, job)

    def _follow(
        self,
        child: _Child,
        job: int,
        waiting: queue.SimpleQueue[tuple[Any, ...]],
        source: Path | BinaryIO,
        progress: Progress,
    ) -> VideoAnalysisResult:
        """Serve the job's messages until it ends: progress to ``progress``, reads from ``source``."""
        stopped: BaseException | None = None  # what ``progress`` raised: the job was cancelled for it
        deadline: float | None = None
        while True:
            try:
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                kind, *rest = waiting.get(timeout=timeout)
            except queue.Empty:  # a cancelled job that does not stop: its child goes
                log.warning("analysis process %s did not stop a cancelled job; ending it", child.process.pid)
                child.end()
                assert stopped is not None
                raise stopped from None
            if kind == "progress":
                if stopped is None:
                    try:
                        progress(*rest)
                    except BaseException as exc:
                        stopped, deadline = exc, time.monotonic() + CANCEL_GRACE_SECONDS
                        try:
                            child.send(("cancel", job))
                        except AnalysisCrashed:
                            raise exc from None
            elif kind == "read":
                offset, length = rest
                try:
                    assert not isinstance(source, Path)
                    source.seek(offset)
                    reply: tuple[Any, ...] = ("data", job, source.read(length), None)
                except Exception as exc:
                    reply = ("data", job, None, f"{type(exc).__name__}: {exc}")
                child.send(reply)
            elif stopped is not None:  # whatever it ended in, it was stopped for this
                raise stopped
            elif kind == "result":
                return VideoAnalysisResult.model_validate_json(rest[0])
            elif kind == "undecodable":
                raise PipelineError(rest[0])
            else:  # "error", "crashed"
                raise AnalysisCrashed(rest[0])

    def close(self) -> None:
        with self._lock:
            if self._idle_timer is not None:
                self._idle_timer.cancel()
            child, self._child = self._child, None
        if child is not None:
            child.end()


# ---------------------------------------------------------------------------- the child


class _Cancelled(Exception):
    pass


class _ParentFile(io.RawIOBase):
    """A remote stored video, read through the parent (which holds the blob store)."""

    def __init__(self, ask: Callable[[int, int], bytes], size: int) -> None:
        self._ask = ask
        self._size = size
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._position

    def readinto(self, buffer: Any) -> int:
        length = min(len(buffer), self._size - self._position)
        if length <= 0:
            return 0
        data = self._ask(self._position, length)
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)


class _Server:
    """The child's side: a thread per job, one pipe to the parent."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.send_lock = threading.Lock()
        self.cancelled: set[int] = set()
        self.replies: dict[int, queue.SimpleQueue[tuple[bytes | None, str | None]]] = {}

    def send(self, message: tuple[Any, ...]) -> None:
        with self.send_lock:
            self.connection.send(message)

    def run(self) -> None:
        while True:
            try:
                message = self.connection.recv()
            except (EOFError, OSError):  # the parent ended or closed us
                return
            kind, job, *rest = message
            if kind == "analyse":
                self.replies[job] = queue.SimpleQueue()
                threading.Thread(target=self._job, args=(job, rest[0]), name=f"analysis-{job}", daemon=True).start()
            elif kind == "cancel":
                self.cancelled.add(job)
            elif kind == "data" and job in self.replies:
                self.replies[job].put((rest[0], rest[1]))

    def _ask(self, job: int, offset: int, length: int) -> bytes:
        self.send(("read", job, offset, length))
        data, error = self.replies[job].get()
        if data is None:
            raise OSError(f"reading the stored video failed: {error}")
        return data

    def _job(self, job: int, request: _Request) -> None:
        from vidgate.processing.pipeline import analyze

        def report(stage: str, fraction: float) -> None:
            if job in self.cancelled:
                raise _Cancelled
            self.send(("progress", job, stage, fraction))

        source: Path | BinaryIO
        if request.path is not None:
            source = Path(request.path)
        else:
            raw = _ParentFile(lambda offset, length: self._ask(job, offset, length), request.size)
            source = io.BufferedReader(raw, buffer_size=READ_BUFFER)
        try:
            result = analyze(
                source,
                video_id=request.video_id,
                content_hash=request.content_hash,
                model_type=request.model_type,
                config=request.config,
                progress=report,
                pictures_dir=Path(request.pictures_dir),
            )
            answer: tuple[Any, ...] = ("result", job, result.model_dump_json())
        except _Cancelled:
            answer = ("cancelled", job)
        except PipelineError as exc:
            answer = ("undecodable", job, str(exc))
        except MemoryError:
            answer = ("error", job, "the analysis ran out of memory (PROCESSING_ANALYSIS_MEMORY_MB)")
        except Exception as exc:
            answer = ("error", job, f"{type(exc).__name__}: {exc}")
        finally:
            self.cancelled.discard(job)
            self.replies.pop(job, None)
        with contextlib.suppress(OSError):  # the parent went away: nobody to tell
            self.send(answer)


def serve(connection: Connection, memory_bytes: int, nice: int) -> None:
    """The analysis child's entry point: limit this process, then analyse what the parent sends."""
    if memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    if nice:
        os.nice(nice)
    _Server(connection).run()
