"""Client file names are data, never paths: reduce them to a safe display name."""

from __future__ import annotations

import re
import unicodedata
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

from vidgate.errors import ExtensionBlocked, ExtensionNotAllowed, InvalidFilename

# Bidirectional overrides and zero-width characters can disguise an extension ("clip\u202emp4.exe").
_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


@dataclass(frozen=True)
class SafeFilename:
    name: str
    extension: str


def sanitize_filename(
    raw: str | None,
    *,
    max_length: int,
    allowed_extensions: Sequence[str],
    blocked_extensions: Sequence[str] = (),
) -> SafeFilename:
    """Return the last path component, NFC-normalised, without control or invisible characters.

    The extension is the text after the *last* dot, lowercased, so ``clip.mp4.exe`` is an
    ``exe``; it must be in ``allowed_extensions``. No dot-separated part of the name may be in
    ``blocked_extensions`` (``invoice.exe.mp4`` is refused too).
    """
    if raw is None or not raw.strip():
        raise InvalidFilename("The upload has no file name; send the file with a name such as clip.mp4.")
    # Multipart writers percent-encode awkward characters (%22, %0A, %00...): see through them.
    text = unicodedata.normalize("NFC", urllib.parse.unquote(raw))
    text = _INVISIBLE.sub("", text)
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")
    text = re.split(r"[/\\]", text)[-1].strip().lstrip(".").strip()
    if not text:
        raise InvalidFilename(f"The file name {raw!r} has no usable name once path parts are removed.")
    if len(text) > max_length:
        raise InvalidFilename(f"The file name is {len(text)} characters long; the limit is {max_length}.")
    blocked = {ext.lower().lstrip(".") for ext in blocked_extensions}
    inner = [part.strip().lower() for part in text.split(".")[1:]]
    hit = next((part for part in inner if part in blocked), None)
    if hit:
        raise ExtensionBlocked(f"The file name contains the blocked extension .{hit}; such files are refused.")
    stem, dot, extension = text.rpartition(".")
    extension = extension.lower() if dot and stem else ""
    allowed = [ext.lower().lstrip(".") for ext in allowed_extensions]
    if extension not in allowed:
        shown = f".{extension}" if extension else "no extension"
        raise ExtensionNotAllowed(
            f"Files with {shown} are not accepted; allowed: {', '.join('.' + e for e in allowed)}."
        )
    return SafeFilename(name=text, extension=extension)
