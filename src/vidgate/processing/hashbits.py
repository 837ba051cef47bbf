"""The 64-bit frame hash as stored and searched: bands, signed storage, hex. Plain integers
(no NumPy), so that serving a result or storing one does not import the numerics."""

from __future__ import annotations

BANDS = 4  # 16-bit bands for multi-index hashing


def bands(value: int) -> list[int]:
    """The four 16-bit bands, high to low. By pigeonhole, two hashes within Hamming distance 3
    share at least one band exactly, so an index per band finds them without a scan."""
    return [(value >> (48 - 16 * i)) & 0xFFFF for i in range(BANDS)]


def to_signed(value: int) -> int:
    """Store an unsigned 64-bit hash in a signed BIGINT column."""
    return value - (1 << 64) if value >= 1 << 63 else value


def to_unsigned(value: int) -> int:
    return value + (1 << 64) if value < 0 else value


def to_hex(value: int) -> str:
    return f"{value:016x}"
