"""Which container a file is, from its first bytes, and whether that agrees with its name
and declared content type.

Families: ISO BMFF (``ftyp`` brands: MP4 or QuickTime MOV), RIFF/AVI, EBML (doctype
``matroska`` or ``webm``), Ogg. The check runs on the first bytes of chunk 0 as soon as they
arrive, before the rest of the upload is stored.
"""

from __future__ import annotations

from dataclasses import dataclass

from vidgate.errors import DangerousContent, FormatMismatch, UnrecognizedFormat
from vidgate.validation.ebml import element_id, read_vint
from vidgate.validation.signatures import dangerous_prefix

HEAD_BYTES = 4096

# Extension -> the containers it may hold.
EXTENSION_FORMATS: dict[str, frozenset[str]] = {
    "mp4": frozenset({"mp4", "mov"}),
    "m4v": frozenset({"mp4", "mov"}),
    "mov": frozenset({"mov", "mp4"}),
    "avi": frozenset({"avi"}),
    "mkv": frozenset({"matroska", "webm"}),  # WebM is a subset of Matroska
    "webm": frozenset({"webm"}),
    "ogg": frozenset({"ogg"}),
    "ogv": frozenset({"ogg"}),
}

# Declared content type -> the containers it may name. Generic types say nothing.
CONTENT_TYPE_FORMATS: dict[str, frozenset[str]] = {
    "video/mp4": frozenset({"mp4", "mov"}),
    "video/x-m4v": frozenset({"mp4", "mov"}),
    "video/quicktime": frozenset({"mov", "mp4"}),
    "video/x-msvideo": frozenset({"avi"}),
    "video/avi": frozenset({"avi"}),
    "video/msvideo": frozenset({"avi"}),
    "video/x-matroska": frozenset({"matroska", "webm"}),
    "video/webm": frozenset({"webm"}),
    "video/ogg": frozenset({"ogg"}),
    "application/ogg": frozenset({"ogg"}),
    # Audio types name the right container; the probe then refuses the missing video clearly.
    "audio/ogg": frozenset({"ogg"}),
    "audio/mp4": frozenset({"mp4", "mov"}),
    "audio/webm": frozenset({"webm"}),
}
GENERIC_CONTENT_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream", "video/*"})

FORMAT_NAMES = {
    "mp4": "MP4 (ISO BMFF)",
    "mov": "QuickTime MOV",
    "avi": "AVI (RIFF)",
    "matroska": "Matroska",
    "webm": "WebM",
    "ogg": "Ogg",
}

_QUICKTIME_BRANDS = {b"qt  "}
_ISO_BOX_TYPES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"}


@dataclass(frozen=True)
class DetectedFormat:
    name: str  # one of FORMAT_NAMES

    @property
    def label(self) -> str:
        return FORMAT_NAMES[self.name]


def detect_format(head: bytes) -> DetectedFormat | None:
    """Identify the container from the first bytes (None: not a supported video container)."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        return DetectedFormat("mov" if brand in _QUICKTIME_BRANDS else "mp4")
    if len(head) >= 8 and head[4:8] in _ISO_BOX_TYPES - {b"ftyp"}:
        # Old QuickTime files may start with moov/mdat/wide without an ftyp box.
        return DetectedFormat("mov")
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return DetectedFormat("avi")
    if head[:4] == b"\x1a\x45\xdf\xa3":
        doctype = _ebml_doctype(head)
        if doctype in (b"matroska", b"webm"):
            return DetectedFormat(doctype.decode())
        return None
    if head[:4] == b"OggS":
        return DetectedFormat("ogg")
    return None


def _ebml_doctype(head: bytes) -> bytes | None:
    """Read the DocType (0x4282) from the EBML header at the start of ``head``."""
    position = 4
    size, length = read_vint(head, position)
    if size is None:
        return None
    position += length
    end = min(len(head), position + size)
    while position < end:
        element, id_length = element_id(head, position)
        if element is None:
            return None
        position += id_length
        size, length = read_vint(head, position)
        if size is None:
            return None
        position += length
        if element == 0x4282:
            return head[position : position + size].rstrip(b"\x00")
        position += size
    return None


def check_head(head: bytes, extension: str, content_type: str | None) -> DetectedFormat:
    """Refuse a file whose first bytes are dangerous, unknown, or disagree with its name or type."""
    danger = dangerous_prefix(head)
    if danger:
        raise DangerousContent(f"The file is {danger}, not a video; it was refused.")
    detected = detect_format(head)
    if detected is None:
        raise UnrecognizedFormat(
            "The file's first bytes match no supported container (MP4, MOV, AVI, Matroska, WebM, Ogg)."
        )
    allowed = EXTENSION_FORMATS.get(extension, frozenset())
    if detected.name not in allowed:
        raise FormatMismatch(f"The file is {detected.label}, but its name ends in .{extension}.")
    declared = (content_type or "").split(";")[0].strip().lower()
    if declared not in GENERIC_CONTENT_TYPES:
        named = CONTENT_TYPE_FORMATS.get(declared)
        if named is None or detected.name not in named:
            raise FormatMismatch(f"The file is {detected.label}, but it was declared as {declared}.")
    return detected
