"""Exact in-memory search of bank frame hashes within a Hamming distance (multi-index hashing).

Every bank frame is kept as four uint64 words in one contiguous matrix, and sixteen inverted
lists map each 16-bit band value to the rows holding it (a counting sort per band: offsets of
65 537 entries and a row permutation). A query frame is looked up by its sixteen bands, each
with every value within ``r = distance // 16`` bits of its own, and every row found is then
scored exactly on all 256 bits.

Why nothing within ``distance`` is missed: the distance of two hashes is the sum of the
distances of their sixteen disjoint bands. If every band differed in more than ``r`` bits, the
sum would be at least ``16 * (r + 1) > distance``. So a pair within ``distance`` agrees within
``r`` bits on at least one band, and that band's probes include the bank frame's value. For the
reference threshold 31, ``r = 1``: 17 probes per band (the value and its 16 one-bit neighbours),
272 per query frame; with random hashes one probe finds ``N / 65536`` rows.

(Eight 32-bit bands would need ``r = 3``: 5 489 probes per band; thirty-two 8-bit bands
``r = 0`` but ``N / 256`` rows per probe: both look at more. Sixteen is the cheapest split.)

Memory: 32 bytes of words, 64 of band permutations (uint32), 8 of entry id, 2 of quality and 4
of timestamp per frame: about 110 MB per million frames (``MODERATION_BANK_INDEX_MAX_HASHES``).
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
from sqlalchemy import Select, select

from vidgate.db.engine import Database
from vidgate.db.models import HashBankEntry, HashBankFrame, HashBankState

BANDS = 16
BAND_VALUES = 1 << 16
FETCH = 50_000
FrameSelect = Select[int, int, float | None, int, int, int, int]  # FRAME_COLUMNS


def words_of(values: list[str]) -> np.ndarray:
    """[n, 4] uint64 words, high to low, of 64-hex PDQ hashes."""
    return np.array([[int(v[i : i + 16], 16) for i in range(0, 64, 16)] for v in values], dtype=np.uint64).reshape(
        -1, 4
    )


def band_matrix(words: np.ndarray) -> np.ndarray:
    """[n, 16] band values (as int64, for indexing): band k is hex digits 4k..4k+3."""
    shifts = np.array([48, 32, 16, 0], dtype=np.uint64)
    bands = (words[:, :, None] >> shifts[None, None, :]) & np.uint64(0xFFFF)
    return bands.reshape(len(words), BANDS).astype(np.int64)


def flips(radius: int) -> np.ndarray:
    """Every 16-bit mask of at most ``radius`` bits (the probes around a band value)."""
    masks = [0]
    for bits in range(1, min(radius, 16) + 1):
        masks.extend(sum(1 << b for b in chosen) for chosen in combinations(range(16), bits))
    return np.array(masks, dtype=np.int64)


@dataclass
class Pairs:
    """Every (query frame, bank row) pair within the distance, each once."""

    query: np.ndarray  # index into the query's frames
    rows: np.ndarray  # index into the index's rows
    distance: np.ndarray


class BankIndex:
    """Bank frames in memory, sorted by entry, with sixteen band inverted lists."""

    def __init__(
        self, entry_ids: np.ndarray, quality: np.ndarray, timestamps: np.ndarray, words: np.ndarray, token: str = ""
    ) -> None:
        order = np.argsort(entry_ids, kind="stable")
        self.entry_ids = np.ascontiguousarray(entry_ids[order], dtype=np.int64)
        self.quality = np.ascontiguousarray(quality[order], dtype=np.int16)
        self.timestamps = np.ascontiguousarray(timestamps[order], dtype=np.float32)
        self.words = np.ascontiguousarray(words[order], dtype=np.uint64)
        self.token = token
        n = len(self.words)
        bands = band_matrix(self.words) if n else np.zeros((0, BANDS), dtype=np.int64)
        self.offsets = np.zeros((BANDS, BAND_VALUES + 1), dtype=np.int64)
        self.perm = np.zeros((BANDS, n), dtype=np.uint32)
        for k in range(BANDS):
            self.perm[k] = np.argsort(bands[:, k], kind="stable")
            self.offsets[k, 1:] = np.cumsum(np.bincount(bands[:, k], minlength=BAND_VALUES))
        self._flat_offsets = self.offsets.ravel()
        self._flat_perm = self.perm.ravel()

    def __len__(self) -> int:
        return len(self.words)

    @property
    def nbytes(self) -> int:
        arrays = (self.entry_ids, self.quality, self.timestamps, self.words, self.offsets, self.perm)
        return sum(a.nbytes for a in arrays)

    def pairs(self, query: np.ndarray, distance: int, quality: int = 0) -> Pairs:
        """Every pair of a query frame (rows of ``query``, [n, 4] uint64) and an indexed frame of
        quality >= ``quality`` within ``distance`` bits: exact (see the module docstring)."""
        n = len(self.words)
        if not n or not len(query):
            empty = np.zeros(0, dtype=np.int64)
            return Pairs(empty, empty, empty)
        masks = flips(distance // BANDS)
        probes = band_matrix(query)[:, :, None] ^ masks[None, None, :]  # [q, 16, p]
        at = probes + (np.arange(BANDS, dtype=np.int64) * (BAND_VALUES + 1))[None, :, None]
        starts = self._flat_offsets[at]
        lengths = (self._flat_offsets[at + 1] - starts).ravel()
        starts = (starts + (np.arange(BANDS, dtype=np.int64) * n)[None, :, None]).ravel()
        total = int(lengths.sum())
        if not total:
            empty = np.zeros(0, dtype=np.int64)
            return Pairs(empty, empty, empty)
        # Expand each probe's range [start, start + length) into positions of the flat permutation.
        ends = np.cumsum(lengths)
        positions = np.arange(total, dtype=np.int64) - np.repeat(ends - lengths - starts, lengths)
        rows = np.take(self._flat_perm, positions).astype(np.int64)
        # One query frame at a time (its rows are contiguous): np.take and four adds are several
        # times faster than 2-d fancy indexing and .sum(axis=1).
        per_frame = lengths.reshape(len(query), -1).sum(axis=1)
        bounds = np.concatenate(([0], np.cumsum(per_frame)))
        gathered = np.take(self.words, rows, axis=0)
        for i in range(len(query)):
            part = gathered[bounds[i] : bounds[i + 1]]
            part ^= query[i]
        bits = np.bitwise_count(gathered)
        near = bits[:, 0].astype(np.int64) + bits[:, 1] + bits[:, 2] + bits[:, 3]
        which = np.repeat(np.arange(len(query), dtype=np.int64), per_frame)
        keep = near <= distance
        if quality > 0:
            keep &= self.quality[rows] >= quality
        which, rows, near = which[keep], rows[keep], near[keep]
        if not len(rows):
            return Pairs(which, rows, near)
        key = which * n + rows  # a pair found through several bands is one pair
        _, first = np.unique(key, return_index=True)
        return Pairs(which[first], rows[first], near[first])

    def entry_rows(self, entry_id: int) -> slice:
        start, end = np.searchsorted(self.entry_ids, [entry_id, entry_id + 1])
        return slice(int(start), int(end))


# ------------------------------------------------------------------------------ from the database
FRAME_COLUMNS = (
    HashBankFrame.entry_id,
    HashBankFrame.quality,
    HashBankFrame.timestamp,
    HashBankFrame.w0,
    HashBankFrame.w1,
    HashBankFrame.w2,
    HashBankFrame.w3,
)


def load(db: Database, statements: list[FrameSelect] | None = None, token: str = "") -> BankIndex:
    """A BankIndex of the frames ``statements`` select (columns :data:`FRAME_COLUMNS`; default:
    every bank frame), read in batches straight into arrays."""
    chunks: list[np.ndarray] = []
    times: list[np.ndarray] = []
    with db.read_engine.connect() as connection:  # SQLite: no write lock for a read
        for statement in [select(*FRAME_COLUMNS)] if statements is None else statements:
            result = connection.execution_options(yield_per=FETCH).execute(statement)
            for partition in result.partitions(FETCH):
                rows = [(r[0], r[1], r[3], r[4], r[5], r[6]) for r in partition]
                chunks.append(np.array(rows, dtype=np.int64).reshape(-1, 6))
                times.append(np.array([np.nan if r[2] is None else r[2] for r in partition], dtype=np.float32))
    table = np.concatenate(chunks) if chunks else np.zeros((0, 6), dtype=np.int64)
    stamps = np.concatenate(times) if times else np.zeros(0, dtype=np.float32)
    return BankIndex(table[:, 0], table[:, 1], stamps, table[:, 2:6].view(np.uint64), token)


def frames_of(*conditions: Any) -> FrameSelect:
    """The frames of entries meeting ``conditions`` (columns of HashBankEntry)."""
    return select(*FRAME_COLUMNS).join(HashBankEntry, HashBankEntry.id == HashBankFrame.entry_id).where(*conditions)


def current_token(db: Database) -> str:
    with db.read_engine.connect() as connection:  # SQLite: no write lock for a read
        token = connection.execute(select(HashBankState.token).where(HashBankState.id == 1)).scalar()
    return str(token)


def bank_frames(db: Database) -> int:
    """How many frames all banks hold (the index's size if it is built)."""
    from sqlalchemy import func

    with db.read_engine.connect() as connection:  # SQLite: no write lock for a read
        return int(connection.execute(select(func.coalesce(func.sum(HashBankEntry.frames), 0))).scalar() or 0)


class _Cache:
    """Each Database's index, rebuilt when the bank token changes (one build at a time)."""

    def __init__(self) -> None:
        self._indexes: weakref.WeakKeyDictionary[Database, BankIndex] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self.last_build_seconds = 0.0

    def get(self, db: Database, max_hashes: int) -> BankIndex | None:
        """The current index, or None when the banks hold more than ``max_hashes`` frames."""
        token = current_token(db)
        index = self._indexes.get(db)
        if index is not None and index.token == token:
            return index
        with self._lock:
            index = self._indexes.get(db)
            if index is not None and index.token == token:
                return index
            self._indexes.pop(db, None)  # free the stale one before building
            if bank_frames(db) > max_hashes:
                return None
            started = time.perf_counter()
            index = load(db, token=token)
            self.last_build_seconds = time.perf_counter() - started
            self._indexes[db] = index
            return index

    def drop(self, db: Database) -> None:
        with self._lock:
            self._indexes.pop(db, None)


CACHE = _Cache()
