"""Hash banks: import lists of known vPDQ/PDQ hashes, and match videos against them.

Accepted files (the format is recognised from the content):

- vPDQ text, as the reference writes it: ``frame_number,quality,hash,timestamp`` per line;
  the file is one video (one entry, named after the file).
- ThreatExchange / HMA vPDQ signals: a JSON list of ``"hash,quality,timestamp"`` strings (one
  video), a JSON object mapping entry names to such lists, or the older per-frame object
  ``{"0": {"hash": ..., "quality": ..., "timestamp": ...}, ...}``.
- ThreatExchange signal lines: ``vpdq <json list>`` or ``pdq <hash>`` per line, optionally with
  a name after a tab or a space (``pdq <hash> <name>``).
- One hash per line: a 64-hex PDQ hash, optionally followed by ``,`` or whitespace and a name;
  each line is one image entry.

Matching follows the reference (threatexchange's vPDQ matcher): frames of quality < 50 are
ignored on both sides, two frames match within Hamming distance 31, and a video matches an
entry when at least 80 % of the video's frames, or of the entry's frames, have a match.
Every frame pair within the distance is found (no candidate is missed): from each process's
in-memory index of all bank frames (:mod:`vidgate.moderation.bankindex`, multi-index hashing
on sixteen 16-bit bands with the pigeonhole radius), or, for banks larger than
``MODERATION_BANK_INDEX_MAX_HASHES``, from the same band probes on the indexed band columns in SQL.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from vidgate.db.engine import Database
from vidgate.db.models import BANK_BANDS, HashBank, HashBankEntry, HashBankFrame, HashBankState
from vidgate.moderation.bankindex import CACHE, BankIndex, band_matrix, flips, frames_of, load, words_of
from vidgate.moderation.models import HashMatch, VpdqFeature, parse_text

QUALITY_THRESHOLD = 50
DISTANCE_THRESHOLD = 31
MATCH_PERCENT = 80.0
MAX_INDEX_HASHES = 2_000_000
INSERT_BATCH = 5000
IN_LIST_CHUNK = 900  # bound parameters per IN list (SQLite's default limit is 32766 in all)
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_BANK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class BankError(ValueError):
    """A bank file or name that cannot be used; the message says what is wrong."""


@dataclass
class BankEntryData:
    name: str | None
    kind: str  # "vpdq" or "pdq"
    frames: list[tuple[str, int]]  # (hash hex, quality)
    timestamps: list[float | None] | None = None  # seconds into the video, per frame, when the file says


@dataclass
class BankSummary:
    name: str
    entries: int
    frames: int


# ---------------------------------------------------------------------------------- parsing
Frames = tuple[list[tuple[str, int]], list[float | None]]


def _seconds(value: object) -> float | None:
    try:
        return float(str(value))
    except ValueError:
        return None


def _compact(items: list[object], where: str) -> Frames:
    frames, stamps = [], []
    for item in items:
        parts = str(item).split(",")
        if len(parts) != 3 or not _HEX64.match(parts[0]):
            raise BankError(f"{where}: {str(item)[:80]!r} is not 'hash,quality,timestamp'")
        frames.append((parts[0].lower(), int(parts[1])))
        stamps.append(_seconds(parts[2]))
    return frames, stamps


def _frames_of(value: object, where: str) -> Frames:
    if isinstance(value, list):
        return _compact(value, where)
    if isinstance(value, dict) and all(isinstance(v, dict) for v in value.values()):
        frames, stamps = [], []
        for number, frame in sorted(value.items(), key=lambda kv: int(kv[0])):
            value_hex = str(frame.get("hash", ""))
            if not _HEX64.match(value_hex):
                raise BankError(f"{where}, frame {number}: no 256-bit hex 'hash'")
            frames.append((value_hex.lower(), int(frame.get("quality", 100))))
            stamps.append(_seconds(frame.get("timestamp", "")))
        return frames, stamps
    raise BankError(f"{where}: expected a list of 'hash,quality,timestamp' strings")


def parse_bank_file(path: Path) -> Iterator[BankEntryData]:
    """Every entry in ``path`` (formats in the module docstring); BankError names a bad line.
    Line formats are read line by line; a JSON document is parsed whole (as JSON must be)."""
    with path.open(encoding="utf-8-sig") as file:
        first = ""
        for line in file:
            if line.strip():
                first = line.strip()
                break
        if not first:
            raise BankError(f"{path.name} is empty")
        if first[0] in "[{":
            file.seek(0)
            try:
                document = json.load(file)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise BankError(f"{path.name} is not valid JSON: {exc}") from exc
            yield from _json_entries(document, path)
            return
        file.seek(0)
        if first.count(",") == 3:
            try:
                features = parse_text(file.read())
            except ValueError as exc:
                raise BankError(f"{path.name}, {exc}") from exc
            yield BankEntryData(
                path.stem, "vpdq", [(f.hash, f.quality) for f in features], [f.timestamp for f in features]
            )
            return
        yield from _signal_lines(file, path.name)


def _json_entries(document: object, path: Path) -> Iterator[BankEntryData]:
    if isinstance(document, list) or (
        isinstance(document, dict) and all(isinstance(v, dict) for v in document.values())
    ):
        yield BankEntryData(path.stem, "vpdq", *_frames_of(document, path.name))
    elif isinstance(document, dict):
        for key, value in document.items():
            yield BankEntryData(str(key), "vpdq", *_frames_of(value, f"{path.name}, entry {key!r}"))
    else:
        raise BankError(f"{path.name}: unexpected JSON {type(document).__name__}")


def _signal_lines(lines: Iterable[str], filename: str) -> Iterator[BankEntryData]:
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{filename}, line {number}"
        kind, _, rest = line.partition(" ")
        kind = kind.lower()
        if kind in ("vpdq", "video_vpdq") and rest.lstrip().startswith("["):
            payload, _, name = rest.strip().partition("]")
            try:
                items = json.loads(payload + "]")
            except json.JSONDecodeError as exc:
                raise BankError(f"{where}: the vPDQ signal is not a JSON list: {exc}") from exc
            yield BankEntryData(name.strip() or None, "vpdq", *_compact(items, where))
            continue
        if kind == "pdq":
            line = rest.strip()
        value, *named = re.split(r"[,\s]+", line, maxsplit=1)
        name = named[0] if named else ""
        if not _HEX64.match(value):
            raise BankError(f"{where}: {value[:80]!r} is not a 256-bit hex PDQ hash")
        yield BankEntryData(name.strip() or None, "pdq", [(value.lower(), 100)])


# ---------------------------------------------------------------------------------- storage
def _words(value: str) -> list[int]:
    """Four signed 64-bit words, high to low (BIGINT columns are signed)."""
    words = [int(value[i : i + 16], 16) for i in range(0, 64, 16)]
    return [w - (1 << 64) if w >= 1 << 63 else w for w in words]


def _bands(value: str) -> list[int]:
    return [int(value[i : i + 4], 16) for i in range(0, 64, 4)]


def check_name(name: str) -> str:
    if not _BANK_NAME.match(name):
        raise BankError(f"bank name {name!r}: use letters, digits, '.', '_' or '-' (at most 128)")
    return name


def touch(session: Session) -> None:
    """Mark every process's bank index stale (in the transaction that changes the banks)."""
    session.execute(update(HashBankState).where(HashBankState.id == 1).values(token=uuid.uuid4().hex))


def import_bank(db: Database, name: str, entries: Iterable[BankEntryData]) -> BankSummary:
    """Add ``entries`` to bank ``name`` (created if new), in batches, in one transaction: a bad
    line anywhere imports nothing. The entries get the bank's next revision, which the re-match
    of stored videos (:mod:`vidgate.moderation.rematch`) picks up."""
    check_name(name)
    count = 0
    with db.session() as session:
        bank = session.scalar(select(HashBank).where(HashBank.name == name).with_for_update())
        if bank is None:
            bank = HashBank(name=name, revision=0, rematched_revision=0)
            session.add(bank)
            session.flush()
        revision = bank.revision + 1
        rows: list[dict[str, int | float | None]] = []
        for entry in entries:
            if not entry.frames:
                raise BankError(f"entry {entry.name!r} holds no hashes")
            count += 1
            record = HashBankEntry(
                bank_id=bank.id, name=entry.name, kind=entry.kind, frames=len(entry.frames), revision=revision
            )
            session.add(record)
            session.flush()
            stamps = entry.timestamps or [None] * len(entry.frames)
            for (value, quality), stamp in zip(entry.frames, stamps, strict=True):
                row: dict[str, int | float | None] = {"entry_id": record.id, "quality": quality, "timestamp": stamp}
                row.update({f"w{i}": w for i, w in enumerate(_words(value))})
                row.update({f"b{i}": b for i, b in enumerate(_bands(value))})
                rows.append(row)
                if len(rows) >= INSERT_BATCH:
                    session.execute(insert(HashBankFrame), rows)
                    rows = []
        if rows:
            session.execute(insert(HashBankFrame), rows)
        if not count:
            raise BankError("the file holds no hashes")
        bank.revision = revision
        touch(session)
    imported = summary(db, name)
    assert imported is not None
    return imported


def summary(db: Database, name: str) -> BankSummary | None:
    with db.session() as session:
        bank = session.scalar(select(HashBank).where(HashBank.name == name))
        if bank is None:
            return None
        entries, frames = session.execute(
            select(func.count(HashBankEntry.id), func.coalesce(func.sum(HashBankEntry.frames), 0)).where(
                HashBankEntry.bank_id == bank.id
            )
        ).one()
    return BankSummary(name, int(entries), int(frames))


def list_banks(db: Database) -> list[BankSummary]:
    with db.session() as session:
        names = session.scalars(select(HashBank.name).order_by(HashBank.name)).all()
    return [s for s in (summary(db, n) for n in names) if s is not None]


def delete_bank(db: Database, name: str) -> bool:
    with db.session() as session:
        bank_id = session.scalar(select(HashBank.id).where(HashBank.name == name))
        if bank_id is None:
            return False
        entries = select(HashBankEntry.id).where(HashBankEntry.bank_id == bank_id)
        session.execute(delete(HashBankFrame).where(HashBankFrame.entry_id.in_(entries)))
        session.execute(delete(HashBankEntry).where(HashBankEntry.bank_id == bank_id))
        session.execute(delete(HashBank).where(HashBank.id == bank_id))
        touch(session)
    return True


# ---------------------------------------------------------------------------------- matching
def _sql_index(db: Database, query: np.ndarray, distance: int, quality: int) -> BankIndex:
    """The frames of every entry with a frame within ``distance`` of a query frame, found with
    the indexed band columns (banks too big for memory): exact, by the same pigeonhole as
    :mod:`vidgate.moderation.bankindex` (probes within ``distance // 16`` bits of each band)."""
    masks = flips(distance // BANK_BANDS)
    bands = band_matrix(query)
    words = (HashBankFrame.w0, HashBankFrame.w1, HashBankFrame.w2, HashBankFrame.w3)
    candidates: set[int] = set()
    with db.read_engine.connect() as connection:  # SQLite: no write lock for a read
        for index in range(BANK_BANDS):
            column = getattr(HashBankFrame, f"b{index}")
            values = sorted({int(v) for v in (bands[:, index][:, None] ^ masks[None, :]).ravel()})
            for start in range(0, len(values), IN_LIST_CHUNK):
                rows = connection.execute(
                    select(HashBankFrame.entry_id, HashBankFrame.quality, *words).where(
                        column.in_(values[start : start + IN_LIST_CHUNK]), HashBankFrame.quality >= quality
                    )
                ).all()
                if not rows:
                    continue
                found = np.array([r[2:] for r in rows], dtype=np.int64).view(np.uint64)
                near = np.bitwise_count(found[:, None, :] ^ query[None, :, :]).sum(axis=2).min(axis=1)
                candidates.update(r[0] for r, d in zip(rows, near, strict=True) if d <= distance)
    ids = sorted(candidates)
    chunks = [frames_of(HashBankEntry.id.in_(ids[i : i + IN_LIST_CHUNK])) for i in range(0, len(ids), IN_LIST_CHUNK)]
    return load(db, chunks)


def _span(values: np.ndarray) -> tuple[float | None, float | None]:
    values = values[~np.isnan(values)]
    if not len(values):
        return None, None
    return round(float(values.min()), 3), round(float(values.max()), 3)


def score(
    index: BankIndex,
    features: list[VpdqFeature],
    *,
    distance: int = DISTANCE_THRESHOLD,
    quality: int = QUALITY_THRESHOLD,
    percent: float = MATCH_PERCENT,
) -> list[tuple[int, float, float, tuple[float | None, ...]]]:
    """(entry id, query %, entry %, (query start, end, entry start, end)) of every indexed entry
    the video matches by the reference's rule: frames of quality < ``quality`` ignored on both
    sides, frames within ``distance`` match, at least ``percent`` of either side's frames."""
    usable = [f for f in features if f.quality >= quality]
    if not usable or not len(index):
        return []
    unique, inverse = np.unique([f.hash for f in usable], return_inverse=True)
    stamps = np.array([f.timestamp for f in usable], dtype=np.float64)
    pairs = index.pairs(words_of(list(unique)), distance, quality)
    if not len(pairs.rows):
        return []
    entries = index.entry_ids[pairs.rows]
    order = np.argsort(entries, kind="stable")
    cuts = np.flatnonzero(np.diff(entries[order])) + 1
    found: list[tuple[int, float, float, tuple[float | None, ...]]] = []
    for group in np.split(order, cuts):
        entry_id = int(entries[group[0]])
        matched_query = np.isin(inverse, pairs.query[group])
        query_percent = 100.0 * float(matched_query.mean())
        rows = index.entry_rows(entry_id)
        usable_entry = int((index.quality[rows] >= quality).sum())
        matched_rows = np.unique(pairs.rows[group])
        entry_percent = 100.0 * len(matched_rows) / usable_entry
        if query_percent >= percent or entry_percent >= percent:
            span = _span(stamps[matched_query]) + _span(index.timestamps[matched_rows].astype(np.float64))
            found.append((entry_id, round(query_percent, 2), round(entry_percent, 2), span))
    return found


def match_video(
    db: Database,
    features: list[VpdqFeature],
    *,
    distance: int = DISTANCE_THRESHOLD,
    quality: int = QUALITY_THRESHOLD,
    percent: float = MATCH_PERCENT,
    max_index_hashes: int = MAX_INDEX_HASHES,
    index: BankIndex | None = None,
) -> list[HashMatch]:
    """Every bank entry the video matches, by the reference's rule, exactly. The banks are
    searched in memory (this process's index, rebuilt when a bank changes) while they hold at
    most ``max_index_hashes`` frames, else through the band columns in SQL. ``index``: search
    these frames instead (the re-match of stored videos against newly imported entries)."""
    usable = [f for f in features if f.quality >= quality]
    if not usable:
        return []
    if index is None:
        index = CACHE.get(db, max_index_hashes)
    if index is None:
        index = _sql_index(db, words_of(sorted({f.hash for f in usable})), distance, quality)
    found = score(index, usable, distance=distance, quality=quality, percent=percent)
    if not found:
        return []
    with db.read_engine.connect() as connection:  # SQLite: no write lock for a read
        names = {
            entry_id: (entry_name, bank_name)
            for entry_id, entry_name, bank_name in connection.execute(
                select(HashBankEntry.id, HashBankEntry.name, HashBank.name)
                .join(HashBank, HashBank.id == HashBankEntry.bank_id)
                .where(HashBankEntry.id.in_([f[0] for f in found]))
            )
        }
    matches = [
        HashMatch(
            bank=names[entry_id][1],
            entry_id=entry_id,
            entry_name=names[entry_id][0],
            query_match_percent=query_percent,
            entry_match_percent=entry_percent,
            query_start=span[0],
            query_end=span[1],
            entry_start=span[2],
            entry_end=span[3],
        )
        for entry_id, query_percent, entry_percent, span in found
        if entry_id in names  # an entry deleted since the index was built is no match
    ]
    return sorted(matches, key=lambda m: (m.bank, m.entry_id))
