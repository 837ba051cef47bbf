"""Container probe with PyAV (its own FFmpeg), run in a child process.

Hostile files are exactly what FFmpeg's parsers are attacked with, so the probe never runs
inside the API process: a child limits its own address space and CPU time before importing
PyAV, checks stream parameters *before* decoding anything (a 100000x100000 frame is refused
from its header, not allocated), decodes one frame, then demuxes every packet to find where
the media really ends. The parent reads one JSON line; a crash or a limit hit is a refusal.

Each probe is a child forked from a warm server process that has PyAV imported already
(multiprocessing's forkserver: importing PyAV costs 0.17 s per fresh interpreter), and forked
before it is needed (starting a child costs ~25 ms, probing a small file ~5 ms); the child
sets its limits when its file arrives, before it opens it. The server probed small trusted
clips of our own once before it forked any child (:mod:`vidgate.validation.probe_warm_up`), so
FFmpeg's lazy set-up is done in every child. Where a child cannot be forked that way, this file
runs as a script (``python probe.py FILE LIMITS``) in a fresh interpreter instead. It imports
only the standard library and ``av``.

A file that is not on this host's disk (an upload completed in a bucket) is not downloaded:
the child is told ``("ranges", size)`` and reads it through :class:`RangedSource`, asking the
parent for byte ranges over the same connection; the parent serves them from one streamed GET
in bounded pieces, so the demux pass reads the object once, as it goes.
"""

from __future__ import annotations

import contextlib
import json
import resource
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Result = dict[str, Any]

# A probe that runs out of its address space shows it as one of these: FFmpeg's ENOMEM (PyAV's
# MemoryError subclasses the built-in one, as does Python's own) or EAGAIN, which is what a
# decoder gets when its worker thread cannot have a stack.
RESOURCE_ERRORS = (MemoryError, BlockingIOError)


def _failure(result: Result, kind: str, exc: Exception) -> Result:
    """The probe's answer for a failed step: ``kind`` for the file's fault, or ``resources``
    when the step failed for want of memory, so the operator is not told the file is bad. The
    message is FFmpeg's reason alone: ``str()`` of a PyAV error also names the file, which here
    is a path inside our storage, and the message goes back to the client."""
    message = getattr(exc, "strerror", None) or str(exc)
    return {**result, "error": "resources" if isinstance(exc, RESOURCE_ERRORS) else kind, "message": message}


class RangedSource:
    """The file being probed when it is not on this host's disk (an object in a bucket): read
    from the parent over ``connection`` in blocks of at least ``BLOCK`` bytes (the parent holds
    the S3 client; this process holds no credentials). Seekable, for PyAV's file-like input."""

    BLOCK = 1 << 20

    def __init__(self, connection: Any, size: int) -> None:
        self.connection, self.size = connection, size
        self.position = 0
        self._start = 0
        self._data = b""

    def read(self, size: int = -1) -> bytes:
        wanted = self.size - self.position if size is None or size < 0 else min(size, self.size - self.position)
        if wanted <= 0:
            return b""
        offset = self.position - self._start
        if not 0 <= offset < len(self._data):
            self.connection.send(("read", self.position, max(wanted, self.BLOCK)))
            self._data, self._start, offset = self.connection.recv_bytes(), self.position, 0
        data = self._data[offset : offset + wanted]
        self.position += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0:
            self.position = offset
        elif whence == 1:
            self.position += offset
        elif whence == 2:
            self.position = self.size + offset
        else:
            raise OSError(f"whence {whence}")
        return self.position

    def tell(self) -> int:
        return self.position

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


def probe(
    path: str | RangedSource, max_width: int, max_height: int, max_duration: float, *, threads: int = 0
) -> Result:
    """``threads``: FFmpeg's decoding threads (0: PyAV's default, FFmpeg's own choice)."""
    import av

    try:
        container = av.open(path, "r")
    except av.FFmpegError as exc:
        return _failure({}, "open", exc)
    with container:
        declared = container.duration / av.time_base if container.duration else None
        result: Result = {
            "format": container.format.name,
            "declared_duration": declared,
            "streams": [
                {"type": s.type, "codec": s.codec_context.name if s.codec_context else None} for s in container.streams
            ],
            "attachments": [
                {
                    "name": s.metadata.get("filename"),
                    "mimetype": s.mimetype,  # type: ignore[attr-defined]
                    "head": bytes(s.data[:64]).hex() if s.data else "",  # type: ignore[attr-defined]
                }
                for s in container.streams
                if s.type == "attachment"
            ],
        }
        videos = list(container.streams.video)
        if not videos:
            return {**result, "error": "no_video"}
        video = videos[0]
        width, height = video.codec_context.width, video.codec_context.height
        result.update(width=width, height=height, codec=video.codec_context.name)
        if width > max_width or height > max_height:
            return {**result, "error": "dimensions"}
        if declared is not None and declared > max_duration:
            return {**result, "error": "duration", "duration": declared}
        if not width or not height:
            message = "the video stream declares no usable frame size (FFmpeg refuses sizes it cannot allocate)"
            return {**result, "error": "decode", "message": message}
        if threads:
            video.codec_context.thread_count = threads
        try:
            frame = next(container.decode(video), None)
        except av.FFmpegError as exc:
            return _failure(result, "decode", exc)
        if frame is None:
            return {**result, "error": "decode", "message": "no frame could be decoded"}
        if frame.width > max_width or frame.height > max_height:
            return {**result, "error": "dimensions", "width": frame.width, "height": frame.height}
        end = 0.0
        try:
            for packet in container.demux():
                if packet.pts is not None and packet.time_base is not None:
                    end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
        except av.FFmpegError as exc:
            return _failure({**result, "end_time": end}, "truncated", exc)
        result.update(end_time=end, duration=max(declared or 0.0, end))
        if result["duration"] > max_duration:
            return {**result, "error": "duration"}
        return result


def limited_probe(path: str | RangedSource, limits: dict[str, Any]) -> Result:
    """Cap this process's address space and CPU time, then probe."""
    memory = int(limits["memory_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    cpu = int(limits["cpu_seconds"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    try:
        return probe(path, int(limits["max_width"]), int(limits["max_height"]), float(limits["max_duration"]))
    except MemoryError as exc:  # Python's own allocation failed, outside any FFmpeg call
        return {"error": "resources", "message": str(exc) or "out of memory"}


WARM_UP_SAMPLES = (("mp4", "mp4"), ("matroska", "mkv"))  # H.264 in the two commonest containers
#: where the trusted clips shipped with vidgate are, made by ``make_warm_up_samples``
WARM_UP_CLIPS = Path(__file__).with_name("warm_up")


def warm_up_clips() -> list[Path]:
    """The shipped warm-up clips (one per container in ``WARM_UP_SAMPLES``), in name order: what
    the warm server probes before it forks and each spare probes again."""
    return sorted(WARM_UP_CLIPS.iterdir())


def make_warm_up_samples(directory: str) -> None:
    """Write the trusted clips the warm probe server probes before it forks (two H.264 frames,
    64x64, per container in ``WARM_UP_SAMPLES``): how the clips shipped in ``warm_up/`` were
    made (``python -c "from vidgate.validation.probe import make_warm_up_samples as m; m('DIR')"``)."""
    import av

    for container, extension in WARM_UP_SAMPLES:
        path = Path(directory) / f"warm-up.{extension}"
        try:
            with av.open(str(path), "w", format=container) as output:
                stream = output.add_stream("libx264", rate=25)
                stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
                for index in range(2):
                    frame = av.VideoFrame(64, 64, "yuv420p")
                    frame.pts = index
                    for packet in stream.encode(frame):
                        output.mux(packet)
                for packet in stream.encode():
                    output.mux(packet)
        except Exception:  # an FFmpeg without this encoder or muxer: that clip is left out
            path.unlink(missing_ok=True)


def probe_on_request(connection: Any, touch_with: Sequence[str] = ()) -> None:
    """Entry point of a child forked ahead of time from the warm probe server: probe the trusted
    ``touch_with`` clips again, wait for one ``(path, limits)``, then limit this process, probe
    and answer. Limits are set only once the request came, right before the file is opened.

    The server warmed FFmpeg up before it forked this child; probing the clips here copies the
    pages a probe writes (~150 copy-on-write faults) while the child waits, not while the upload
    does (measured: 3.0 ms of CPU here, the upload's probe of 4 MiB 1.35 ms against 2.6 without)."""
    for clip in touch_with:  # our own clips: nothing to limit yet; one thread, as in the server
        with contextlib.suppress(Exception):
            probe(clip, 64, 64, 60.0, threads=1)
    try:
        request, limits = connection.recv()
    except (EOFError, OSError):  # the parent discarded this spare or went away
        return
    # a path, or ("ranges", size): the file is read from the parent over this connection
    source = request if isinstance(request, str) else RangedSource(connection, int(request[1]))
    connection.send(limited_probe(source, limits))
    connection.close()


def report_warm_up(connection: Any) -> None:
    """Entry point of the start-up check's child: send what its server warmed up with (the
    clips it probed clean, its threads afterwards). The server imported the warm-up module
    already; imported here, where it did not, it probes now, in this child."""
    from vidgate.validation import probe_warm_up

    connection.send((probe_warm_up.WARMED, probe_warm_up.THREADS))
    connection.close()


def main() -> None:
    if sys.argv[1] == "--connection":  # a ranged file, where no warm child could be forked
        from multiprocessing.connection import Connection

        probe_on_request(Connection(int(sys.argv[2])))
        return
    path, limits_json = sys.argv[1], sys.argv[2]
    sys.stdout.write(json.dumps(limited_probe(path, json.loads(limits_json))) + "\n")


if __name__ == "__main__":
    main()
