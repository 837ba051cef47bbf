"""What ``vidgate upload`` draws: the progress bar model, fed by real uploads to the real test server."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import pytest
from rich.console import Console

from tests.media import make_video
from vidgate.client import ProgressUpdate, VidgateClient
from vidgate.client.console import FileBar, _bar

KIB = 1024
VIRTUAL_SPEED = 1_000_000.0  # bytes per second of the test's clock


class Stop(Exception):
    pass


def test_a_resumed_upload_is_drawn_done_from_the_first_frame_and_not_counted_as_speed(
    client: VidgateClient, tmp_path: Path
) -> None:
    """The bar's clock moves only as this run sends bytes (1 MB per virtual second): the speed
    shown is then exactly that, whatever was already on the server, and the first frame shows
    the resumed part of the known total."""
    video = make_video(tmp_path / "resume.mp4", frames=40, seed=uuid.uuid4().int % 2**32)
    size = video.stat().st_size

    def give_up(update: ProgressUpdate) -> None:
        if update.chunks_done == 4:
            raise Stop

    with pytest.raises(Stop):
        client.upload(video, chunk_size=16 * KIB, progress=give_up)

    now = [0.0]
    screen = Console(file=io.StringIO(), width=120, color_system=None, force_terminal=False)
    bar = _bar(screen)
    bar.get_time = lambda: now[0]
    line = FileBar(bar)
    frames: list[str] = []

    def show(update: ProgressUpdate) -> None:
        now[0] = update.bytes_sent / VIRTUAL_SPEED
        line.show(update)
        if not frames:
            with screen.capture() as captured:
                screen.print(bar.get_renderable())
            frames.append(captured.get())

    upload = client.upload(video, chunk_size=16 * KIB, progress=show)
    assert upload.resumed and upload.chunks_sent == upload.total_chunks - 4
    assert line.task is not None
    [task] = bar.tasks
    assert (task.completed, task.total) == (size, size)
    assert f"64.0/{size / KIB:.1f} KiB" in frames[0], frames[0]
    assert task.speed == pytest.approx(VIRTUAL_SPEED)
