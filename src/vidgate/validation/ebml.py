"""The two EBML primitives (Matroska/WebM): element ids and variable-size integers."""

from __future__ import annotations


def read_vint(data: bytes, position: int) -> tuple[int | None, int]:
    """A variable-size integer at ``position``: (value, bytes used); (None, 0) if cut off."""
    if position >= len(data):
        return None, 0
    first = data[position]
    for length in range(1, 9):
        if first & (0x80 >> (length - 1)):
            if position + length > len(data):
                return None, 0
            value = first & (0xFF >> length)
            for byte in data[position + 1 : position + length]:
                value = (value << 8) | byte
            return value, length
    return None, 0


def element_id(data: bytes, position: int) -> tuple[int | None, int]:
    """An element id at ``position`` (marker bits kept, as the spec writes them)."""
    if position >= len(data):
        return None, 0
    first = data[position]
    for length in range(1, 5):
        if first & (0x80 >> (length - 1)):
            if position + length > len(data):
                return None, 0
            return int.from_bytes(data[position : position + length], "big"), length
    return None, 0
