"""The checks an assembled file must pass before it is stored, in order of cost.

1. first bytes: container family agrees with the name and declared type (again, for files
   assembled from staged chunks or after a restart);
2. structure walk: nothing missing (truncation), nothing appended, no payload in opaque boxes,
   no ZIP directory at the end (polyglot);
3. probe in a child process: a video stream, sane dimensions and duration, a decodable first
   frame, media that runs to the declared end; attachments that are fonts or images only;
4. ClamAV, when a daemon is configured.
Each failure raises its own :class:`~vidgate.errors.VidgateError`, in that order. The probe may
start earlier (:meth:`FileValidator.start_probe`: a file complete on local disk is sent to its
child while the upload is recorded); its answer is still judged only after checks 1 and 2.
"""

from __future__ import annotations

import functools
import json
import logging
import multiprocessing
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from vidgate.config import ValidationSettings
from vidgate.errors import (
    DangerousContent,
    DimensionsTooLarge,
    DurationTooLong,
    NoVideoStream,
    StorageUnavailable,
    TrailingData,
    TruncatedFile,
    UndecodableVideo,
)
from vidgate.storage.base import RangedFile, RangedReader
from vidgate.validation import probe as probe_module
from vidgate.validation.clamav import ClamAVScanner
from vidgate.validation.formats import HEAD_BYTES, DetectedFormat, check_head
from vidgate.validation.signatures import dangerous_inside, dangerous_prefix, zip_end_record
from vidgate.validation.structure import Read, walk

log = logging.getLogger(__name__)

OPAQUE_SCAN_LIMIT = 16 << 20  # bytes of each opaque region searched for payloads
ZIP_TAIL = 65_557  # largest possible ZIP end-of-central-directory record with its comment
WALK_WINDOW = 64 << 10  # bytes per ranged GET of a structure walk over a remote file (it reads headers)
MAX_PROBE_READ = 16 << 20  # the most one read of a probe child is served (it asks for 1 MiB)
SAFE_ATTACHMENT_TYPES = (
    "font/",
    "application/x-truetype-font",
    "application/vnd.ms-opentype",
    "application/x-font",
    "image/jpeg",
    "image/png",
    "image/webp",
)


class MediaInfo(BaseModel):
    """What validation learnt about an accepted file."""

    container: str
    codec: str | None = None
    width: int | None = None
    height: int | None = None
    duration: float | None = None


class FileValidator:
    def __init__(self, settings: ValidationSettings) -> None:
        self.settings = settings
        self.scanner = (
            ClamAVScanner(settings.clamd_socket, settings.clamd_timeout_seconds) if settings.clamd_socket else None
        )
        if self.scanner is None:
            log.info("virus scan skipped: VALIDATION_CLAMD_SOCKET is not set")

    def validate(
        self, source: Path | RangedFile, extension: str, content_type: str | None, early: ProbeInFlight | None = None
    ) -> MediaInfo:
        """Validate the assembled file: a local ``Path``, or a :class:`RangedFile` (an object in
        a bucket) read by ranges where it is: the same checks, nothing downloaded whole.
        ``early``: the probe :meth:`start_probe` sent this same file to before (its answer is
        used in the probe's place; every other check runs as always, in the same order)."""
        if isinstance(source, Path):
            fd = os.open(source, os.O_RDONLY)
            try:
                detected = self._check_start(
                    functools.partial(os.pread, fd), os.fstat(fd).st_size, extension, content_type
                )
            finally:
                os.close(fd)
        else:
            walker = source.reader(WALK_WINDOW)
            try:
                detected = self._check_start(walker.pread, source.size, extension, content_type)
            finally:
                walker.close()
        info = MediaInfo(container=detected.name)
        if self.settings.probe_enabled:
            info = self._probe(source, info, early)
        if self.scanner is not None:
            self.scanner.scan(source)
        else:
            log.debug("virus scan skipped for %s (no clamd configured)", source.name)
        return info

    def _check_start(self, read: Read, size: int, extension: str, content_type: str | None) -> DetectedFormat:
        """The first bytes and the structure walk (``read(length, offset)`` as ``os.pread``)."""
        detected = check_head(read(HEAD_BYTES, 0), extension, content_type)
        self._check_structure(read, size, detected.name)
        return detected

    def _check_structure(self, read: Read, size: int, container: str) -> None:
        structure = walk(read, size, container)
        if structure.truncated:
            raise TruncatedFile(f"The file is incomplete: {structure.truncated}.")
        if structure.end < size:
            trailing = read(min(OPAQUE_SCAN_LIMIT, size - structure.end), structure.end)
            found = dangerous_inside(trailing)
            if found:
                raise DangerousContent(
                    f"The file carries {found} after the end of its video data "
                    f"({size - structure.end} bytes); it was refused."
                )
            raise TrailingData(
                f"{size - structure.end} bytes follow the end of the {container} data; such files are refused."
            )
        for offset, length, label in structure.opaque_regions:
            found = dangerous_inside(read(min(length, OPAQUE_SCAN_LIMIT), offset))
            if found:
                raise DangerousContent(f"The file hides {found} in its {label}; it was refused.")
        tail_start = max(0, size - ZIP_TAIL)
        if zip_end_record(read(size - tail_start, tail_start)):
            raise DangerousContent("The file is also a ZIP/JAR archive (a polyglot); it was refused.")

    def start_probe(self, path: Path) -> ProbeInFlight | None:
        """Send a complete local file to a spare probe child now, before it is recorded and
        before its cheaper checks, so that the child parses it while this process records the
        upload (the two cores work at once); :meth:`validate` then takes its answer. None when
        no spare child can take it (``validate`` probes as always). The child is as isolated
        and limited as any probe's; an answer never asked for is discarded with its child
        (:meth:`ProbeInFlight.close`, which the caller must call in every case)."""
        if not self.settings.probe_enabled:
            return None
        try:
            child = _take_probe_child()
        except (AssertionError, OSError):
            return None
        early = ProbeInFlight(child, _Target(str(path)), self.settings.probe_timeout_seconds)
        try:
            early.send(self._limits())
        except OSError:  # the spare died before it read the file: validation probes as always
            early.close()
            return None
        return early

    def _limits(self) -> dict[str, Any]:
        return {
            "memory_bytes": self.settings.probe_memory_mb << 20,
            "cpu_seconds": max(1, int(self.settings.probe_timeout_seconds)),
            "max_width": self.settings.max_width,
            "max_height": self.settings.max_height,
            "max_duration": self.settings.max_duration_seconds,
        }

    def _probe(self, source: Path | RangedFile, info: MediaInfo, early: ProbeInFlight | None = None) -> MediaInfo:
        same_file = early is not None and isinstance(source, Path) and early.path == str(source)
        result = early.answer() if early is not None and same_file else _NO_WARM_CHILD
        if result is _NO_WARM_CHILD or result is _GONE:  # none sent, or its child was gone
            result = self._probe_now(source)
        if not isinstance(result, dict):
            raise UndecodableVideo("The file could not be read safely (its parser failed or hit its limits).")
        self._judge(result)
        return info.model_copy(
            update={
                "codec": result.get("codec"),
                "width": result.get("width"),
                "height": result.get("height"),
                "duration": result.get("duration"),
            }
        )

    def _probe_now(self, source: Path | RangedFile) -> object:
        limits, timeout = self._limits(), self.settings.probe_timeout_seconds
        if isinstance(source, Path):
            result = _probe_in_warm_child(_Target(str(source)), limits, timeout)
            if result is _NO_WARM_CHILD:
                result = self._probe_in_fresh_interpreter(source, limits)
            return result
        # the child holds no S3 client nor credentials: it asks this process for byte
        # ranges over its pipe, served from one streamed GET (one bounded window)
        reader = source.reader()
        try:
            target = _Target(("ranges", source.size), reader, source.name)
            result = _probe_in_warm_child(target, limits, timeout)
            if result is _NO_WARM_CHILD:
                result = _probe_over_connection_in_fresh_interpreter(target, limits, timeout)
            return result
        finally:
            reader.close()

    def _probe_in_fresh_interpreter(self, path: Path, limits: dict[str, Any]) -> dict[str, Any] | None:
        command = [sys.executable, probe_module.__file__, str(path), json.dumps(limits)]
        try:
            completed = subprocess.run(
                command, capture_output=True, text=True, timeout=self.settings.probe_timeout_seconds, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise _probe_timeout(self.settings.probe_timeout_seconds) from exc
        if completed.returncode != 0 or not completed.stdout.strip():
            log.warning("probe of %s failed (exit %s): %s", path.name, completed.returncode, completed.stderr[-500:])
            return None
        result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
        return result

    def _judge(self, result: dict[str, Any]) -> None:
        error = result.get("error")
        s = self.settings
        if error == "open":
            message = str(result.get("message", ""))
            if "moov" in message:
                raise TruncatedFile("The file is incomplete: its index ('moov' box) is missing.")
            raise UndecodableVideo(f"The file cannot be opened as video ({message}).")
        if error == "no_video":
            kinds = sorted({str(stream["type"]) for stream in result.get("streams", [])}) or ["no streams"]
            raise NoVideoStream(f"The file has no video stream (it has: {', '.join(kinds)}).")
        if error == "dimensions":
            raise DimensionsTooLarge(
                f"The video is {result.get('width')}x{result.get('height')} pixels; at most "
                f"{s.max_width}x{s.max_height} is accepted."
            )
        if error == "duration":
            hours = float(result.get("duration") or result.get("declared_duration") or 0) / 3600
            raise DurationTooLong(
                f"The video lasts {hours:.1f} h; at most {s.max_duration_seconds / 3600:.1f} h is accepted."
            )
        if error == "decode":
            raise UndecodableVideo(f"The first video frame cannot be decoded ({result.get('message')}).")
        if error == "truncated":
            raise TruncatedFile(f"The media data breaks off ({result.get('message')}).")
        if error == "resources":
            raise UndecodableVideo(
                f"Reading the file needed more memory than the probe may use ({s.probe_memory_mb} MiB): "
                f"{result.get('message')}."
            )
        for attachment in result.get("attachments", []):
            mimetype = str(attachment.get("mimetype") or "")
            head = bytes.fromhex(str(attachment.get("head") or ""))
            danger = dangerous_prefix(head)
            if danger or not mimetype.startswith(SAFE_ATTACHMENT_TYPES):
                kind = danger or mimetype or "unknown type"
                raise DangerousContent(
                    f"The file carries an attachment {attachment.get('name')!r} ({kind}); "
                    "only fonts and cover images are accepted."
                )
        declared, end = result.get("declared_duration"), result.get("end_time")
        if declared and end is not None and declared - end > max(1.0, 0.05 * declared):
            raise TruncatedFile(
                f"The media data ends at {end:.1f} s but the file declares {declared:.1f} s: it was cut off."
            )


_NO_WARM_CHILD = object()
_GONE = object()  # the probe child was gone before it read its file
_WARM = multiprocessing.get_context("forkserver")
# the warm-up module probes our clips on import: the server forks every child warmed up
_WARM.set_forkserver_preload(["av", "vidgate.validation.probe", "vidgate.validation.probe_warm_up"])


def warm_up_probes() -> None:
    """Start the warm probe server now (about 0.4 s of CPU importing PyAV and probing its
    warm-up clips) rather than on the first upload, check with a first child that it warmed up
    (only then has it finished, so it no longer competes with uploads for the CPU) and fork the
    first spare probe child. Raises when it cannot (the start-up warm-up reports it); probes
    then say so themselves (or use a fresh interpreter)."""
    answers, child_end = _WARM.Pipe(duplex=False)
    child = _WARM.Process(target=probe_module.report_warm_up, args=(child_end,), daemon=True)
    try:
        child.start()
        child_end.close()
        if not answers.poll(60):
            raise RuntimeError("the probe server's first child did not answer within 60 s")
        warmed, threads = answers.recv()
    except EOFError as exc:
        raise RuntimeError(f"the probe server's first child exited with {child.exitcode}") from exc
    finally:
        answers.close()
        if child.is_alive():
            child.kill()
        child.join(timeout=5)
    if not warmed:
        raise RuntimeError("the probe server could not probe its warm-up clips (is PyAV installed?)")
    if threads != 1:
        log.warning("the probe server has %d threads after its warm-up: a fork copies only one", threads)
    _keep_spare(_start_probe_child())


_ProbeChild = tuple[BaseProcess, Connection]
_TOUCH_CLIPS = tuple(str(clip) for clip in probe_module.warm_up_clips())  # a spare probes them: _spare_touch
_spare_lock = threading.Lock()
_spare: _ProbeChild | None = None
_in_use = 0  # probes in flight: ProbeInFlight made and not closed yet (under _spare_lock)


def _start_probe_child(touch_with: tuple[str, ...] = _TOUCH_CLIPS) -> _ProbeChild:
    """A child of the warm probe server waiting for a file to probe, after it probed
    ``touch_with`` (raises AssertionError or OSError where no child can be started, e.g. in a
    daemonic pool process)."""
    parent_end, child_end = _WARM.Pipe(duplex=True)
    try:
        process = _WARM.Process(target=probe_module.probe_on_request, args=(child_end, touch_with), daemon=True)
        process.start()
    except BaseException:
        parent_end.close()
        raise
    finally:
        child_end.close()
    return process, parent_end


def _end_probe_child(child: _ProbeChild) -> None:
    process, connection = child
    connection.close()
    if process.is_alive():
        process.kill()
    process.join(timeout=5)


def _take_probe_child() -> _ProbeChild:
    """The spare child if one is ready, else a new one (which probes no clip first: that would
    only delay its own probe)."""
    global _spare
    with _spare_lock:
        spare, _spare = _spare, None
    if spare is not None and not spare[0].is_alive():
        _end_probe_child(spare)
        spare = None
    return spare if spare is not None else _start_probe_child(touch_with=())


def _spare_touch() -> tuple[str, ...]:
    """What the next spare probes while it waits: our clips when no other probe is running (the
    upload's probe is then ~1.3 ms of CPU quicker), none while others are: then the machine is
    busy with uploads, and the touch's ~3 ms of CPU per spare cost more than they saved (64
    clients, the probe tree's CPU per upload 15.8 / 14.1 ms with the touch, 12.9 / 11.5 without)."""
    with _spare_lock:
        busy = _in_use > 0
    return () if busy else _TOUCH_CLIPS


def _replenish_spare() -> None:
    """Fork the next spare (after a probe, in the background, so the next upload does not wait)."""
    try:
        child = _start_probe_child(_spare_touch())
    except Exception as exc:
        log.info("no spare probe child: %s", exc)
        return
    _keep_spare(child)


def _keep_spare(child: _ProbeChild) -> None:
    global _spare
    with _spare_lock:
        if _spare is None:
            _spare = child
            return
    _end_probe_child(child)  # another thread made one meanwhile


def _probe_timeout(seconds: float) -> UndecodableVideo:
    return UndecodableVideo(f"Probing the file took longer than {seconds:.0f} s; it was refused.")


@dataclass(frozen=True, slots=True)
class _Target:
    """What a probe child opens: a path, or ``("ranges", size)`` read from ``reader`` over its pipe."""

    request: str | tuple[str, int]
    reader: RangedReader | None = None
    name: str = ""

    def __str__(self) -> str:
        return self.name or Path(str(self.request)).name


def _answer(connection: Connection, target: _Target, limits: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Send the child its file and limits, serve the byte ranges it asks for (a ranged target),
    and return its answer; the timeout covers the whole probe, reads included."""
    connection.send((target.request, limits))
    return _receive(connection, target, time.monotonic() + timeout, timeout)


def _receive(connection: Connection, target: _Target, deadline: float, timeout: float) -> dict[str, Any]:
    """The child's answer to the file it was sent, serving the ranges it asks for until then."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not connection.poll(left):
            raise _probe_timeout(timeout)
        message = connection.recv()
        if isinstance(message, dict):
            return message
        if target.reader is None or not (isinstance(message, tuple) and len(message) == 3 and message[0] == "read"):
            raise EOFError(f"the probe child sent {type(message).__name__}, not an answer")
        offset, length = int(message[1]), int(message[2])
        try:
            data = target.reader.pread(max(0, min(length, MAX_PROBE_READ)), max(0, offset))
        except OSError as exc:  # the store's fault, not the file's: the upload is checked again later
            raise StorageUnavailable(f"The file being validated could not be read ({exc}).") from exc
        connection.send_bytes(data)


def _probe_in_warm_child(target: _Target, limits: dict[str, Any], timeout: float, *, retry: bool = True) -> object:
    """Probe in a child of the warm probe server, forked ahead of time when possible; a crash
    or a limit hit gives None, and ``_NO_WARM_CHILD`` when no such child can be started here
    (a daemonic pool process)."""
    try:
        child = _take_probe_child()
    except (AssertionError, OSError) as exc:
        log.info("probing in a fresh interpreter: %s", exc)
        return _NO_WARM_CHILD
    probe = ProbeInFlight(child, target, timeout)
    try:
        probe.send(limits)
    except OSError:  # a broken pipe: the spare died before it was sent the file
        probe.close()
        result: object = _GONE
    else:
        result = probe.answer()
    if result is _GONE:  # not the file's fault: once more, with another child
        log.warning("the probe child for %s was gone before it read the file", target)
        return _probe_in_warm_child(target, limits, timeout, retry=False) if retry else None
    return result


def _let_go(child: _ProbeChild) -> None:
    """End a probe child that was used (or overran: it must not go on); reaping it and forking
    the next spare cost ~20 ms, so they happen in the background, not on the upload's time: on
    one thread that lives as long as the process (starting a thread per child waited, on the
    upload's time, until the new thread ran; and under many uploads the threads forked spares
    at once that all but one were ended unused, see :func:`_keep_spare`)."""
    process, connection = child
    connection.close()
    if process.is_alive():
        process.kill()
    _retiring.put(child)
    _retirer.ensure_running()


class ProbeInFlight:
    """A probe child that was sent its file: its answer is taken once, or the child is ended
    unasked (:meth:`close`). Validation's own probes, and those :meth:`FileValidator.start_probe`
    starts before the upload is recorded. The probe's timeout runs from the send."""

    def __init__(self, child: _ProbeChild, target: _Target, timeout: float) -> None:
        global _in_use
        self.child, self.target, self.timeout = child, target, timeout
        self.connection = child[1]
        self.deadline = 0.0  # set by send
        self._closed = False
        with _spare_lock:
            _in_use += 1  # until close: see _spare_touch

    @property
    def path(self) -> str:
        return str(self.target.request)

    def send(self, limits: dict[str, Any]) -> None:
        """Send the child its file and limits (raises ``OSError`` when it is gone)."""
        self.connection.send((self.target.request, limits))
        self.deadline = time.monotonic() + self.timeout

    def answer(self) -> object:
        """The child's answer (a dict); None when it read the file and crashed or hit a limit (a
        refusal); ``_GONE`` when it was gone before it read the file (a reset on the answer: the
        request was left unread), which is not the file's fault. Ends the child either way."""
        try:
            return _receive(self.connection, self.target, self.deadline, self.timeout)
        except EOFError:
            process = self.child[0]
            process.join(timeout=5)
            log.warning("probe of %s failed (exit %s)", self.target, process.exitcode)
            return None
        except OSError:
            return _GONE
        finally:
            self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """End the child (if its answer was not taken, it is discarded); safe to call twice."""
        global _in_use
        if not self._closed:
            self._closed = True
            with _spare_lock:
                _in_use -= 1
            _let_go(self.child)


def _probe_over_connection_in_fresh_interpreter(
    target: _Target, limits: dict[str, Any], timeout: float
) -> dict[str, Any] | None:
    """A ranged target where no warm child can be forked: ``probe.py --connection FD`` in a
    fresh interpreter, speaking the warm child's protocol over a socket pair."""
    mine, theirs = socket.socketpair()
    try:
        process = subprocess.Popen(
            [sys.executable, probe_module.__file__, "--connection", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    finally:
        theirs.close()
    connection = Connection(mine.detach())
    try:
        return _answer(connection, target, limits, timeout)
    except (EOFError, OSError):
        process.wait(timeout=5)
        log.warning("probe of %s failed (exit %s)", target, process.returncode)
        return None
    finally:
        connection.close()
        if process.poll() is None:
            process.kill()
        process.wait(timeout=5)
        if process.stderr is not None:
            process.stderr.close()


class _Retirer:
    """The thread that reaps probe children let go of and forks the next spare when none is
    kept. Started by the first child let go of in a process (and again in a forked process,
    which has no thread of its parent's)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def ensure_running(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="probe-spare", daemon=True)
                self._thread.start()

    @staticmethod
    def _run() -> None:
        while True:
            _end_probe_child(_retiring.get())
            if _spare is None:  # read without the lock: _keep_spare settles a race
                _replenish_spare()


_retiring: queue.SimpleQueue[_ProbeChild] = queue.SimpleQueue()
_retirer = _Retirer()
