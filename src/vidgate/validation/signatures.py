"""Signatures of things that must never pass as video: executables, scripts, archives.

Short magic numbers (``MZ``, ``PK``) would match by chance inside compressed media, so they
are only looked for where a file or a hidden region *starts*; long, unambiguous markers
(``<script``, a PE header, a ZIP end-of-directory record) are searched inside regions.
"""

from __future__ import annotations

import re
import struct

_PREFIXES: list[tuple[bytes, str]] = [
    (b"MZ", "a Windows executable (MZ/PE)"),
    (b"\x7fELF", "a Linux executable (ELF)"),
    (b"\xfe\xed\xfa\xce", "a macOS executable (Mach-O)"),
    (b"\xfe\xed\xfa\xcf", "a macOS executable (Mach-O)"),
    (b"\xce\xfa\xed\xfe", "a macOS executable (Mach-O)"),
    (b"\xcf\xfa\xed\xfe", "a macOS executable (Mach-O)"),
    (b"\xca\xfe\xba\xbe", "a Java class or Mach-O universal binary"),
    (b"#!", "a script (shebang)"),
    (b"PK\x03\x04", "a ZIP/JAR archive"),
    (b"PK\x05\x06", "a ZIP/JAR archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"%PDF-", "a PDF document"),
    (b"L\x00\x00\x00\x01\x14\x02\x00", "a Windows shortcut (LNK)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an Office/OLE document"),
]
_MARKUP = re.compile(
    rb"^\s*<(?:!doctype\s+html|html|head|body|script|iframe|svg|\?php|\?xml|object|embed)\b", re.IGNORECASE
)
_INNER_MARKERS = re.compile(rb"<script\b|<html\b|<\?php|<iframe\b|javascript:|<svg\b[^>]*onload", re.IGNORECASE)
_BOM = b"\xef\xbb\xbf"


def dangerous_prefix(data: bytes) -> str | None:
    """What ``data`` looks like if it starts like an executable, script or archive."""
    for magic, label in _PREFIXES:
        if data.startswith(magic):
            return label
    if _MARKUP.match(data.removeprefix(_BOM)[:1024]):
        return "an HTML/script document"
    return None


def dangerous_inside(data: bytes) -> str | None:
    """Markers that are unambiguous anywhere in a region (script tags, PE headers, ELF headers)."""
    prefix = dangerous_prefix(data)
    if prefix:
        return prefix
    if _INNER_MARKERS.search(data):
        return "HTML/script code"
    for match in re.finditer(rb"MZ", data):
        start = match.start()
        if start + 0x40 <= len(data):
            (pe_offset,) = struct.unpack_from("<I", data, start + 0x3C)
            if 0 < pe_offset < 4096 and data[start + pe_offset : start + pe_offset + 4] == b"PE\x00\x00":
                return "a Windows executable (MZ/PE)"
    if b"\x7fELF\x02\x01\x01" in data or b"\x7fELF\x01\x01\x01" in data:
        return "a Linux executable (ELF)"
    return None


def zip_end_record(tail: bytes) -> bool:
    """True when ``tail`` (the last bytes of a file) ends with a ZIP end-of-central-directory
    record: the file is also a ZIP/JAR archive (a polyglot), whatever it starts with."""
    position = tail.rfind(b"PK\x05\x06")
    while position >= 0:
        if position + 22 <= len(tail):
            (comment_length,) = struct.unpack_from("<H", tail, position + 20)
            if position + 22 + comment_length == len(tail):
                return True
        position = tail.rfind(b"PK\x05\x06", 0, position)
    return False
