"""Real media files for tests, encoded with PyAV (milliseconds each), and hostile variants
of them built byte by byte. Nothing here is a committed blob."""

from __future__ import annotations

import io
import struct
import zipfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# container -> (PyAV format, video codec, file extension)
CONTAINERS = {
    "mp4": ("mp4", "libx264", "mp4"),
    "m4v": ("ipod", "libx264", "m4v"),  # brand "M4V ", as iTunes and HandBrake write it
    "3gp": ("3gp", "libx264", "3gp"),  # brand "3gp6", as phones write it
    "3g2": ("3g2", "libx264", "3g2"),  # brand "3g2b"
    "mov": ("mov", "libx264", "mov"),
    "mkv": ("matroska", "libx264", "mkv"),
    "webm": ("webm", "libvpx-vp9", "webm"),
    "avi": ("avi", "mpeg4", "avi"),
    "ogg": ("ogg", "libvpx", "ogg"),
    "ogv": ("ogg", "libvpx", "ogv"),
}

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def _frames(count: int, width: int, height: int, seed: int) -> list[av.VideoFrame]:
    rng = np.random.default_rng(seed)
    return [
        av.VideoFrame.from_ndarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), format="rgb24")
        for _ in range(count)
    ]


def make_video(
    path: Path,
    container: str = "mp4",
    *,
    frames: int = 50,
    width: int = 160,
    height: int = 120,
    seed: int = 1,
    options: dict[str, str] | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Encode ``frames`` noise frames (about 9 KB each at 160x120 in H.264) into ``container``."""
    fmt, codec, _ = CONTAINERS[container]
    with av.open(str(path), "w", format=fmt, options=options or {}) as output:
        if metadata:
            output.metadata.update(metadata)
        stream = output.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in _frames(frames, width, height, seed):
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return path


def make_mp4(path: Path, *, frames: int = 50, width: int = 160, height: int = 120, seed: int = 1) -> Path:
    return make_video(path, "mp4", frames=frames, width=width, height=height, seed=seed)


def make_audio_only(path: Path, fmt: str = "mp4", codec: str = "aac") -> Path:
    """A real file with one audio stream and no video."""
    with av.open(str(path), "w", format=fmt) as output:
        stream = output.add_stream(codec, rate=48000)
        stream.layout = "mono"
        samples = np.zeros((1, 960), dtype=np.float32)
        for index in range(50):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = 48000
            frame.pts = index * 960
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return path


def make_long_clip(path: Path, hours: float = 48.0) -> Path:
    """Three frames spread over ``hours``: a tiny file that claims a very long duration."""
    with av.open(str(path), "w", format="matroska") as output:
        stream = output.add_stream("mjpeg", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        stream.codec_context.time_base = Fraction(1, 1)
        stream.time_base = Fraction(1, 1000)
        step = int(hours * 3600 / 2)
        for index, frame in enumerate(_frames(3, 64, 48, 3)):
            frame.pts = index * step
            frame.time_base = Fraction(1, 1)
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return path


def make_huge_dimensions_avi(path: Path, claimed: int = 100_000) -> Path:
    """A small raw-video AVI whose headers claim ``claimed`` x ``claimed`` pixel frames: a
    decoder trusting them would allocate gigabytes per frame (a decompression bomb)."""
    with av.open(str(path), "w", format="avi") as output:
        stream = output.add_stream("rawvideo", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for frame in _frames(3, 160, 120, 4):
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    data = bytearray(path.read_bytes())
    header = data[:4096]
    original, forged = struct.pack("<ii", 160, 120), struct.pack("<ii", claimed, claimed)
    assert original in header
    data[:4096] = header.replace(original, forged)
    path.write_bytes(bytes(data))
    return path


def pe_executable() -> bytes:
    """The first bytes of a Windows PE: MZ header pointing at a PE signature."""
    dos = bytearray(b"MZ" + b"\x90\x00" * 29)
    dos += b"\x00" * (0x3C - len(dos)) + struct.pack("<I", 0x80)
    dos += b"\x00" * (0x80 - len(dos)) + b"PE\x00\x00" + b"\x4c\x01" + b"\x00" * 200
    return bytes(dos)


def elf_executable() -> bytes:
    return b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x02\x00\x3e\x00" + b"\x00" * 200


def zip_archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("META-INF/MANIFEST.MF", "Main-Class: Evil\n")
        archive.writestr("Evil.class", b"\xca\xfe\xba\xbe" + b"\x00" * 64)
    return buffer.getvalue()


def iso_box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def make_scene_video(
    path: Path,
    *,
    seconds: float = 8.0,
    width: int = 320,
    height: int = 180,
    fps: int = 25,
    codec: str = "libx264",
    fmt: str = "mp4",
    scene_seconds: float = 4.0,
    seed: int = 11,
    start: float = 0.0,
    options: dict[str, str] | None = None,
) -> Path:
    """Natural-looking content for perceptual tests: smooth scenes (a coloured gradient with a
    moving bright square) that change every ``scene_seconds``. ``start`` skips the first
    seconds, so a trimmed copy shows exactly the same pictures at the same times minus
    ``start``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    scenes = []
    for _ in range(int(np.ceil((seconds + start) / scene_seconds)) + 1):
        a, b, c = rng.uniform(0.2, 1.0, 3)
        angle = rng.uniform(0, np.pi)
        ramp = (np.cos(angle) * xx / width + np.sin(angle) * yy / height) % 1.0
        # Large soft blobs, different in every scene: the structure a perceptual hash sees.
        blobs = rng.random((4, 6)).astype(np.float32)
        field = blobs[(yy * 4 / height).astype(int), (xx * 6 / width).astype(int)]
        ramp = 0.15 * ramp + 0.85 * field
        base = np.stack([ramp * a, ramp * b, ramp * c], axis=-1)  # luma follows the blobs
        scenes.append((base * 255).astype(np.uint8))
    with av.open(str(path), "w", format=fmt) as output:
        stream = output.add_stream(
            codec, rate=fps, options=options or {"preset": "veryfast"} if codec == "libx264" else options
        )
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        first = round(start * fps)
        for index in range(first, first + round(seconds * fps)):
            t = index / fps
            image = scenes[int(t // scene_seconds)].copy()
            size = max(4, height // 5)
            x = int((t * width / 6) % (width - size))
            y = int((height - size) / 2 + (height / 4) * np.sin(t))
            image[y : y + size, x : x + size] = 255
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index - first
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return path


def make_video_with_audio(path: Path, *, seconds: int = 2) -> Path:
    """H.264 video with an AAC stereo audio track, in MP4."""
    with av.open(str(path), "w") as output:
        video = output.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
        audio = output.add_stream("aac", rate=48000)
        audio.layout = "stereo"
        for frame in _frames(25 * seconds, 160, 120, 8):
            for packet in video.encode(frame):
                output.mux(packet)
        samples = np.zeros((2, 1024), dtype=np.float32)
        for index in range(48000 * seconds // 1024):
            chunk = av.AudioFrame.from_ndarray(samples, format="fltp", layout="stereo")
            chunk.sample_rate, chunk.pts = 48000, index * 1024
            for packet in audio.encode(chunk):
                output.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode():
                output.mux(packet)
    return path


def rotate_mp4(path: Path) -> Path:
    """Set the video track's display matrix (tkhd) to a 90 degree rotation, as phones record."""
    data = bytearray(path.read_bytes())
    identity = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)
    rotated = struct.pack(">9I", 0, 0x00010000, 0, 0xFFFF0000, 0, 0, 0, 0, 0x40000000)
    at = data.find(identity, data.find(b"tkhd"))
    assert at > 0
    data[at : at + 36] = rotated
    path.write_bytes(bytes(data))
    return path
