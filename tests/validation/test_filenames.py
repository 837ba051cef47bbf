from __future__ import annotations

import pytest

from vidgate.errors import ExtensionNotAllowed, InvalidFilename
from vidgate.validation.filenames import sanitize_filename

ALLOWED = ["mp4", "avi", "mov", "mkv", "webm", "ogg"]


@pytest.mark.parametrize(
    ("raw", "name", "extension"),
    [
        ("clip.mp4", "clip.mp4", "mp4"),
        ("CLIP.MP4", "CLIP.MP4", "mp4"),
        ("../../etc/clip.mkv", "clip.mkv", "mkv"),
        ("C:\\Users\\x\\clip.webm", "clip.webm", "webm"),
        ("/abs/path/clip.mov", "clip.mov", "mov"),
        ("cli\x00p\x1f.avi", "clip.avi", "avi"),
        ("vid\u00e9o\u0301.ogg", "vid\u00e9\u00f3.ogg", "ogg"),  # NFC composes the accent
        ("..hidden.mp4", "hidden.mp4", "mp4"),
    ],
)
def test_names_are_reduced_to_a_safe_name(raw: str, name: str, extension: str) -> None:
    safe = sanitize_filename(raw, max_length=255, allowed_extensions=ALLOWED)
    assert (safe.name, safe.extension) == (name, extension)
    assert "/" not in safe.name and "\\" not in safe.name and "\x00" not in safe.name


@pytest.mark.parametrize("raw", ["clip.mp4.exe", "clip", "clip.\u202e4pm.exe", "mp4", ".mp4", "clip.php"])
def test_disallowed_extensions(raw: str) -> None:
    with pytest.raises(ExtensionNotAllowed):
        sanitize_filename(raw, max_length=255, allowed_extensions=ALLOWED)


@pytest.mark.parametrize("raw", [None, "", "   ", "../", "\x00\x01"])
def test_unusable_names(raw: str | None) -> None:
    with pytest.raises(InvalidFilename):
        sanitize_filename(raw, max_length=255, allowed_extensions=ALLOWED)


def test_length_limit() -> None:
    with pytest.raises(InvalidFilename):
        sanitize_filename("a" * 300 + ".mp4", max_length=255, allowed_extensions=ALLOWED)
