"""Client file names are data, never paths: reduce them to a safe display name."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from vidgate.errors import ExtensionNotAllowed, InvalidFilename

# Bidirectional overrides and zero-width characters can disguise an extension ("clip\u202emp4.exe").
_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


@dataclass(frozen=True)
class SafeFilename:
    name: str
    extension: str


def sanitize_filename(raw: str | None, *, max_length: int, allowed_extensions: list[str]) -> SafeFilename:
    """Return the last path component, NFC-normalised, without control or invisible characters.

    The extension is the text after the *last* dot, lowercased, so ``clip.mp4.exe`` is an
    ``exe``; it must be in ``allowed_extensions``.
    """
    if raw is None or not raw.strip():
        raise InvalidFilename("The upload has no file name; send the file with a name such as clip.mp4.")
    text = unicodedata.normalize("NFC", raw)
    text = _INVISIBLE.sub("", text)
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")
    text = re.split(r"[/\\]", text)[-1].strip().lstrip(".").strip()
    if not text:
        raise InvalidFilename(f"The file name {raw!r} has no usable name once path parts are removed.")
    if len(text) > max_length:
        raise InvalidFilename(f"The file name is {len(text)} characters long; the limit is {max_length}.")
    stem, dot, extension = text.rpartition(".")
    extension = extension.lower() if dot and stem else ""
    allowed = [ext.lower().lstrip(".") for ext in allowed_extensions]
    if extension not in allowed:
        shown = f".{extension}" if extension else "no extension"
        raise ExtensionNotAllowed(
            f"Files with {shown} are not accepted; allowed: {', '.join('.' + e for e in allowed)}."
        )
    return SafeFilename(name=text, extension=extension)
