"""64-bit DCT perceptual hash of a frame, and the helpers near-duplicate search needs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

HASH_SIZE = 32  # the frame is reduced to 32x32 grey before the DCT
BANDS = 4  # 16-bit bands for multi-index hashing


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    matrix[0, :] = np.sqrt(1.0 / n)
    return np.asarray(matrix, dtype=np.float64)


_DCT = _dct_matrix(HASH_SIZE)


def phash(gray32: np.ndarray) -> int:
    """pHash: 2-D DCT of the 32x32 grey frame; the 8x8 lowest frequencies compared with their
    median (the DC term left out of the median) give 64 bits."""
    pixels = gray32.astype(np.float64)
    coefficients = _DCT @ pixels @ _DCT.T
    low = coefficients[:8, :8].flatten()
    median = np.median(low[1:])
    bits = low > median
    return int(np.packbits(bits).view(">u8")[0])


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def majority(hashes: Sequence[int]) -> int:
    """Bitwise majority vote: one 64-bit fingerprint for a sequence of frame hashes."""
    if not hashes:
        return 0
    bits = np.array([[(h >> (63 - i)) & 1 for i in range(64)] for h in hashes], dtype=np.uint8)
    votes = bits.sum(axis=0) * 2 >= len(hashes)
    return int(np.packbits(votes).view(">u8")[0])


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
