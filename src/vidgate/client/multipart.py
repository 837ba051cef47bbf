"""A multipart/form-data body whose file part streams from disk.

The server reads the form fields before the ``file`` part, so they go first. The file part
is one byte range of the file, read block by block while the request is being sent: memory
holds one block, never a chunk or the file. The length is known up front, so the request
carries a Content-Length (the server refuses an oversize upload before reading it).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from vidgate.client.errors import FileChanged
from vidgate.client.hashing import BLOCK_SIZE

# As browsers (and httpx) escape a name inside a quoted header parameter.
_ESCAPES = {'"': "%22", "\\": "\\\\"} | {chr(c): f"%{c:02X}" for c in range(0x20) if c != 0x1B}
_ESCAPE_RE = re.compile("|".join(re.escape(c) for c in _ESCAPES))


def _quoted(value: str) -> str:
    return '"' + _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group(0)], value) + '"'


@dataclass(frozen=True, slots=True)
class FilePart:
    """Bytes ``[offset, offset + length)`` of the open file ``fd``, sent as ``filename``."""

    fd: int
    offset: int
    length: int
    filename: str
    content_type: str


class MultipartBody:
    """Fields, then the file range; iterate it to get the body, block by block."""

    def __init__(
        self,
        fields: Mapping[str, str],
        part: FilePart,
        on_block: Callable[[int, memoryview], None] | None = None,
    ) -> None:
        self.boundary = uuid.uuid4().hex
        self.part = part
        self.on_block = on_block
        head = bytearray()
        for name, value in fields.items():
            head += f"--{self.boundary}\r\nContent-Disposition: form-data; name={_quoted(name)}\r\n\r\n".encode()
            head += value.encode() + b"\r\n"
        head += (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="file"; filename={_quoted(part.filename)}'
            f"\r\nContent-Type: {part.content_type}\r\n\r\n"
        ).encode()
        self._head = bytes(head)
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return len(self._head) + self.part.length + len(self._tail)

    def __iter__(self) -> Iterator[bytes]:
        yield self._head
        part, sent = self.part, 0
        while sent < part.length:
            block = os.pread(part.fd, min(BLOCK_SIZE, part.length - sent), part.offset + sent)
            if not block:
                raise FileChanged(f"the file ended at byte {part.offset + sent} while it was being sent")
            if self.on_block is not None:
                self.on_block(part.offset + sent, memoryview(block))
            sent += len(block)
            yield block
        yield self._tail
