"""Which container a file is, from its first bytes, and whether that agrees with its name
and declared content type.

Families: ISO BMFF (``ftyp`` brands: MP4, M4V, 3GPP, or QuickTime MOV), RIFF/AVI, EBML
(doctype ``matroska`` or ``webm``), Ogg. A declared type only has to name the right family;
a generic one (``application/octet-stream``, empty) claims nothing. The check runs on the
first bytes of chunk 0 as soon as they arrive, before the rest of the upload is stored.
"""

from __future__ import annotations

from dataclasses import dataclass

from vidgate.errors import DangerousContent, FormatMismatch, UnrecognizedFormat
from vidgate.validation.ebml import element_id, read_vint
from vidgate.validation.signatures import dangerous_prefix

HEAD_BYTES = 4096

_ISO_BMFF = frozenset({"mp4", "mov"})  # MP4, QuickTime, 3GPP: one box structure, told apart by brand only
_MATROSKA = frozenset({"matroska", "webm"})  # WebM is a subset of Matroska
_WEBM = frozenset({"webm"})
_AVI = frozenset({"avi"})
_OGG = frozenset({"ogg"})

# Extension -> the containers it may hold.
EXTENSION_FORMATS: dict[str, frozenset[str]] = {
    "mp4": _ISO_BMFF,
    "m4v": _ISO_BMFF,
    "mov": _ISO_BMFF,
    "3gp": _ISO_BMFF,
    "3g2": _ISO_BMFF,
    "avi": _AVI,
    "mkv": _MATROSKA,
    "webm": _WEBM,
    "ogg": _OGG,
    "ogv": _OGG,
}

# Declared content type -> the containers it may name: every registered type and the aliases
# that browsers, operating systems and tools send for them (IANA; freedesktop shared-mime-info's
# aliases, which Linux browsers use for extensions they do not know themselves; Windows' and
# macOS's registries). A browser picks the type from the extension alone, so a type only has to
# name the right container family: an .ogg video is declared audio/ogg by Chromium, a .3gp
# video/3gpp or audio/3gpp. Audio types are accepted for that reason; the probe then refuses a
# file that really has no video. Which browser sends which type: tests/web/test_page.py.
CONTENT_TYPE_FORMATS: dict[str, frozenset[str]] = {
    **dict.fromkeys(
        (
            "video/mp4",  # RFC 4337
            "application/mp4",
            "audio/mp4",
            "video/x-m4v",  # Safari and macOS for .m4v
            "audio/x-m4a",
            "audio/m4a",
            "video/mp4v-es",
            "video/quicktime",
            "video/3gpp",  # RFC 3839
            "video/3gp",
            "audio/3gpp",  # Python's mimetypes for .3gp
            "video/3gpp2",  # RFC 4393
            "audio/3gpp2",
        ),
        _ISO_BMFF,
    ),
    **dict.fromkeys(
        (
            "video/matroska",  # RFC 9559; Chromium for .mkv
            "video/x-matroska",  # the older unregistered name, still the common one
            "audio/matroska",
            "audio/x-matroska",
            "video/matroska-3d",
            "video/x-matroska-3d",
        ),
        _MATROSKA,
    ),
    **dict.fromkeys(("video/webm", "audio/webm"), _WEBM),
    **dict.fromkeys(
        (
            "video/x-msvideo",  # Linux (shared-mime-info) for .avi
            "video/avi",  # Windows' and macOS's registries
            "video/msvideo",
            "video/vnd.avi",  # the IANA registration
            "video/x-avi",
            "video/divx",
            "video/vnd.divx",
        ),
        _AVI,
    ),
    **dict.fromkeys(
        (
            "video/ogg",  # RFC 5334
            "application/ogg",  # RFC 5334; Firefox for .ogg
            "audio/ogg",  # Chromium and Safari for .ogg
            "application/x-ogg",
            "video/x-ogg",
            "video/x-theora+ogg",
            "video/x-theora",
            "video/x-ogm+ogg",
            "video/x-ogm",
        ),
        _OGG,
    ),
}
# Types that say nothing about the container: treated as no claim at all.
GENERIC_CONTENT_TYPES = frozenset(
    {
        "",
        "application/octet-stream",
        "binary/octet-stream",
        "application/binary",
        "application/unknown",
        "video/*",
        "*/*",
    }
)

FORMAT_NAMES = {
    "mp4": "MP4 (ISO BMFF)",
    "mov": "QuickTime MOV",
    "avi": "AVI (RIFF)",
    "matroska": "Matroska",
    "webm": "WebM",
    "ogg": "Ogg",
}

# The type to declare for each container (what the refusal of a wrong type suggests).
PREFERRED_CONTENT_TYPES = {
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "avi": "video/x-msvideo",
    "matroska": "video/matroska",
    "webm": "video/webm",
    "ogg": "video/ogg",
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
    declared = declared_media_type(content_type)
    if declared is not None and detected.name not in CONTENT_TYPE_FORMATS.get(declared, frozenset()):
        raise FormatMismatch(_type_mismatch(detected, declared))
    return detected


def declared_media_type(content_type: str | None) -> str | None:
    """The declared type without parameters, lowercased; None when it claims nothing (missing,
    empty or generic such as application/octet-stream)."""
    declared = (content_type or "").split(";")[0].strip().lower()
    return None if declared in GENERIC_CONTENT_TYPES else declared


def _type_mismatch(detected: DetectedFormat, declared: str) -> str:
    """Name what the bytes are and what the declared type stands for, so the two visibly differ."""
    instead = f"send it as {PREFERRED_CONTENT_TYPES[detected.name]} or without a type"
    named = CONTENT_TYPE_FORMATS.get(declared)
    if named is None:
        return (
            f"The file is {detected.label}, but it was declared as {declared}, which is not the type of "
            f"a supported video container; {instead}."
        )
    families = " or ".join(label for name, label in FORMAT_NAMES.items() if name in named)
    return f"The file is {detected.label}, but it was declared as {declared}, a type for {families}; {instead}."
