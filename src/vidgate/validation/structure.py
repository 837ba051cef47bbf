"""Walk a container's top-level structure: where it really ends, whether bytes are missing,
and which opaque regions (free boxes, unknown boxes) could hide a payload.

This reads only headers (a few bytes per box, element or page), never the media data, so
it costs little even on a 500 MB file. Anything after the container's end is "appended
data": the classic way to smuggle an executable or a ZIP behind a playable video.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from vidgate.validation.ebml import element_id, read_vint

# Top-level ISO BMFF boxes with a defined meaning; others are opaque and get scanned.
_ISO_KNOWN = {
    b"ftyp",
    b"moov",
    b"mdat",
    b"moof",
    b"mfra",
    b"styp",
    b"sidx",
    b"ssix",
    b"prft",
    b"emsg",
    b"meta",
    b"pdin",
    b"wide",
    b"pnot",
    b"udta",
}
_ISO_OPAQUE = {b"free", b"skip", b"uuid"}


@dataclass
class Structure:
    end: int  # offset where the container ends
    truncated: str | None = None  # why bytes are missing, if they are
    opaque_regions: list[tuple[int, int, str]] = field(default_factory=list)  # (offset, length, label)


#: ``read(length, offset)`` as ``os.pread`` (a local file, or ranged GETs of an object)
Read = Callable[[int, int], bytes]


def _pread(fd: int, length: int, offset: int) -> bytes:
    return os.pread(fd, length, offset)


def walk(source: int | Read, file_size: int, container: str) -> Structure:
    """Walk the file open as ``source`` (a descriptor, or a ``read(length, offset)``)."""
    read: Read = functools.partial(_pread, source) if isinstance(source, int) else source
    if container in ("mp4", "mov"):
        return _walk_iso(read, file_size)
    if container == "avi":
        return _walk_riff(read, file_size)
    if container in ("matroska", "webm"):
        return _walk_ebml(read, file_size)
    if container == "ogg":
        return _walk_ogg(read, file_size)
    raise ValueError(f"unknown container {container}")


def _walk_iso(read: Read, file_size: int) -> Structure:
    structure = Structure(end=0)
    position = 0
    seen: set[bytes] = set()
    while position + 8 <= file_size:
        header = read(16, position)
        size = int.from_bytes(header[:4], "big")
        box = header[4:8]
        header_length = 8
        if size == 1:
            if len(header) < 16:
                break
            size = int.from_bytes(header[8:16], "big")
            header_length = 16
        elif size == 0:
            size = file_size - position
        if size < header_length or not all(32 <= c < 127 for c in box):
            break  # not a box: the container ended before this byte
        if position + size > file_size and box not in _ISO_KNOWN | _ISO_OPAQUE:
            break  # an unknown "box" running past the end is not a box: appended data starts here
        if position + size > file_size:
            structure.truncated = (
                f"the '{box.decode()}' box needs {position + size - file_size} more bytes than the file has"
            )
            structure.end = file_size
            return structure
        seen.add(box)
        if box in _ISO_OPAQUE or box not in _ISO_KNOWN:
            structure.opaque_regions.append((position + header_length, size - header_length, f"'{box.decode()}' box"))
        position += size
        structure.end = position
    if b"moov" not in seen and b"moof" not in seen:
        structure.truncated = "the index ('moov' box) is missing: the file was cut off or never finished"
    return structure


def _walk_riff(read: Read, file_size: int) -> Structure:
    structure = Structure(end=0)
    position = 0
    while position + 12 <= file_size:
        header = read(12, position)
        if header[:4] != b"RIFF" or header[8:12] not in (b"AVI ", b"AVIX"):
            break
        size = int.from_bytes(header[4:8], "little") + 8
        size += size & 1  # RIFF chunks are padded to even sizes
        if position + size > file_size + 1:  # tolerate a missing final pad byte
            structure.truncated = f"the RIFF chunk needs {position + size - file_size} more bytes than the file has"
            structure.end = file_size
            return structure
        position = min(position + size, file_size)
        structure.end = position
    return structure


def _walk_ebml(read: Read, file_size: int) -> Structure:
    structure = Structure(end=0)
    position = 0
    segments = 0
    while position < file_size:
        header = read(16, position)
        element, id_length = element_id(header, 0)
        size, size_length = read_vint(header, id_length)
        if element is None or size is None:
            break
        if element not in (0x1A45DFA3, 0x18538067, 0xEC):  # EBML header, Segment, Void
            break
        if element == 0x18538067:
            if segments:
                break  # a second segment is not something players read: treat as appended
            segments += 1
            if size == (1 << (7 * size_length)) - 1:
                structure.end = file_size  # "unknown size" (live writers): runs to the end
                return structure
        total = id_length + size_length + size
        if position + total > file_size:
            structure.truncated = (
                f"the Matroska segment needs {position + total - file_size} more bytes than the file has"
            )
            structure.end = file_size
            return structure
        position += total
        structure.end = position
    if not segments:
        structure.truncated = "the Matroska segment is missing"
    return structure


def _walk_ogg(read: Read, file_size: int) -> Structure:
    structure = Structure(end=0)
    position = 0
    buffer = b""
    buffer_start = 0
    while position < file_size:
        if position + 282 > buffer_start + len(buffer):  # a page header is at most 27 + 255 bytes
            buffer_start = position
            buffer = read(1 << 20, position)
        local = position - buffer_start
        if buffer[local : local + 4] != b"OggS":
            break
        if local + 27 > len(buffer):
            structure.truncated = "the last Ogg page header is cut off"
            break
        segments = buffer[local + 26]
        table = buffer[local + 27 : local + 27 + segments]
        if len(table) < segments:
            structure.truncated = "the last Ogg page header is cut off"
            break
        page = 27 + segments + sum(table)
        if position + page > file_size:
            structure.truncated = f"the last Ogg page needs {position + page - file_size} more bytes than the file has"
            structure.end = file_size
            return structure
        position += page
        structure.end = position
    return structure
