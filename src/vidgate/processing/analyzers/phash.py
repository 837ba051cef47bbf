"""64-bit DCT perceptual hash of a frame, and the helpers near-duplicate search needs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vidgate.processing.hashbits import BANDS, bands, to_hex, to_signed, to_unsigned

__all__ = [
    "BANDS",
    "BARS_SIZE",
    "bands",
    "hamming",
    "majority",
    "phash",
    "to_hex",
    "to_signed",
    "to_unsigned",
    "without_bars",
]

HASH_SIZE = 32  # the frame is reduced to 32x32 grey before the DCT


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    matrix[0, :] = np.sqrt(1.0 / n)
    return np.asarray(matrix, dtype=np.float64)


_DCT = _dct_matrix(HASH_SIZE)


BARS_SIZE = 128  # the grey picture black bars are looked for in (then reduced to 32x32)
BAR_LUMA = 24.0  # a row or column darker than this (mean and 98th percentile) is a bar
MAX_BAR_SHARE = 0.35  # bars cover at most this share of each side; more is a dark scene


def without_bars(gray: np.ndarray) -> np.ndarray:
    """The picture without black bars (letterbox, pillarbox), reduced to 32x32 by area
    averaging: a letterboxed copy hashes like its source."""
    rows = _content_span(gray, axis=1)
    columns = _content_span(gray, axis=0)
    picture = gray[rows[0] : rows[1], columns[0] : columns[1]].astype(np.float64)
    return _area_resize(picture, HASH_SIZE)


def _content_span(gray: np.ndarray, axis: int) -> tuple[int, int]:
    dark = (gray.mean(axis=axis) < BAR_LUMA) & (np.percentile(gray, 98, axis=axis) < BAR_LUMA * 2)
    size = len(dark)
    limit = int(size * MAX_BAR_SHARE)
    start = 0
    while start < limit and dark[start]:
        start += 1
    end = size
    while size - end < limit and dark[end - 1]:
        end -= 1
    if end - start < size // 4:
        return 0, size
    return start, end


def _area_resize(picture: np.ndarray, size: int) -> np.ndarray:
    """Mean of each of size x size cells (cells differ by at most one pixel)."""
    rows = np.linspace(0, picture.shape[0], size + 1).astype(int)
    columns = np.linspace(0, picture.shape[1], size + 1).astype(int)
    summed = np.add.reduceat(np.add.reduceat(picture, rows[:-1], axis=0), columns[:-1], axis=1)
    counts = np.outer(np.diff(rows), np.diff(columns))
    result: np.ndarray = summed / counts
    return result


def phash(gray32: np.ndarray) -> int:
    """pHash: 2-D DCT of the 32x32 grey frame; the 8x8 lowest frequencies compared with their
    median (the DC term left out of the median) give 64 bits."""
    pixels = np.asarray(gray32, dtype=np.float64)
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
