"""Media metadata from an open container (no decoding)."""

from __future__ import annotations

from typing import Any

from vidgate.processing.models import AudioStreamInfo, MediaMetadata, VideoStreamInfo


def read_metadata(container: Any, size_bytes: int) -> MediaMetadata:
    import av

    video = container.streams.video[0]
    context = video.codec_context
    rate = video.average_rate or video.guessed_rate
    duration = container.duration / av.time_base if container.duration else None
    if duration is None and video.duration is not None and video.time_base is not None:
        duration = float(video.duration * video.time_base)
    bitrate = container.bit_rate or (int(size_bytes * 8 / duration) if duration else None)
    return MediaMetadata(
        container=container.format.name,
        duration=duration,
        bitrate=bitrate,
        size_bytes=size_bytes,
        video=VideoStreamInfo(
            codec=context.name,
            width=context.width,
            height=context.height,
            fps=float(rate) if rate else None,
            pix_fmt=context.pix_fmt,
            frames=video.frames or None,
            bitrate=context.bit_rate or None,
        ),
        audio=[
            AudioStreamInfo(
                codec=stream.codec_context.name,
                sample_rate=stream.codec_context.sample_rate or None,
                channels=stream.codec_context.channels or None,
                language=stream.language,
            )
            for stream in container.streams.audio
        ],
    )
