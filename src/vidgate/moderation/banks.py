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
Candidates come from multi-index hashing: each hash is stored as sixteen 16-bit bands, each
indexed; an entry is a candidate when one of its frames shares a band exactly with one of the
video's (``probe_radius=1`` also probes every one-bit neighbour of each band, which by
pigeonhole finds every pair within 31 bits, at 17 times the index lookups). Candidates are then
scored exactly.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import delete, func, insert, select

from vidgate.db.engine import Database
from vidgate.db.models import BANK_BANDS, HashBank, HashBankEntry, HashBankFrame
from vidgate.moderation.models import HashMatch, VpdqFeature
from vidgate.processing.analyzers.vpdq import parse_text

QUALITY_THRESHOLD = 50
DISTANCE_THRESHOLD = 31
MATCH_PERCENT = 80.0
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


@dataclass
class BankSummary:
    name: str
    entries: int
    frames: int


# ---------------------------------------------------------------------------------- parsing
def _compact(items: list[object], where: str) -> list[tuple[str, int]]:
    frames = []
    for item in items:
        parts = str(item).split(",")
        if len(parts) != 3 or not _HEX64.match(parts[0]):
            raise BankError(f"{where}: {str(item)[:80]!r} is not 'hash,quality,timestamp'")
        frames.append((parts[0].lower(), int(parts[1])))
    return frames


def _frames_of(value: object, where: str) -> list[tuple[str, int]]:
    if isinstance(value, list):
        return _compact(value, where)
    if isinstance(value, dict) and all(isinstance(v, dict) for v in value.values()):
        frames = []
        for number, frame in sorted(value.items(), key=lambda kv: int(kv[0])):
            value_hex = str(frame.get("hash", ""))
            if not _HEX64.match(value_hex):
                raise BankError(f"{where}, frame {number}: no 256-bit hex 'hash'")
            frames.append((value_hex.lower(), int(frame.get("quality", 100))))
        return frames
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
            yield BankEntryData(path.stem, "vpdq", [(f.hash, f.quality) for f in features])
            return
        yield from _signal_lines(file, path.name)


def _json_entries(document: object, path: Path) -> Iterator[BankEntryData]:
    if isinstance(document, list) or (
        isinstance(document, dict) and all(isinstance(v, dict) for v in document.values())
    ):
        yield BankEntryData(path.stem, "vpdq", _frames_of(document, path.name))
    elif isinstance(document, dict):
        for key, value in document.items():
            yield BankEntryData(str(key), "vpdq", _frames_of(value, f"{path.name}, entry {key!r}"))
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
            yield BankEntryData(name.strip() or None, "vpdq", _compact(items, where))
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


def import_bank(db: Database, name: str, entries: Iterable[BankEntryData]) -> BankSummary:
    """Add ``entries`` to bank ``name`` (created if new), in batches, in one transaction: a bad
    line anywhere imports nothing."""
    check_name(name)
    count = 0
    with db.session() as session:
        bank = session.scalar(select(HashBank).where(HashBank.name == name))
        if bank is None:
            bank = HashBank(name=name)
            session.add(bank)
            session.flush()
        rows: list[dict[str, int]] = []
        for entry in entries:
            if not entry.frames:
                raise BankError(f"entry {entry.name!r} holds no hashes")
            count += 1
            record = HashBankEntry(bank_id=bank.id, name=entry.name, kind=entry.kind, frames=len(entry.frames))
            session.add(record)
            session.flush()
            for value, quality in entry.frames:
                row = {"entry_id": record.id, "quality": quality}
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
    return True


# ---------------------------------------------------------------------------------- matching
def _matrix(values: list[str]) -> np.ndarray:
    return np.array([[int(v[i : i + 16], 16) for i in range(0, 64, 16)] for v in values], dtype=np.uint64)


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between every row of ``a`` and of ``b`` (both [n, 4] uint64)."""
    result: np.ndarray = np.bitwise_count(a[:, None, :] ^ b[None, :, :]).sum(axis=2)
    return result


def _unsigned(words: tuple[int, ...]) -> list[int]:
    return [w + (1 << 64) if w < 0 else w for w in words]


def match_video(
    db: Database,
    features: list[VpdqFeature],
    *,
    distance: int = DISTANCE_THRESHOLD,
    quality: int = QUALITY_THRESHOLD,
    percent: float = MATCH_PERCENT,
    probe_radius: int = 0,
) -> list[HashMatch]:
    """Every bank entry the video matches, by the reference's rule."""
    usable = [f.hash for f in features if f.quality >= quality]
    if not usable:
        return []
    unique = sorted(set(usable))
    query = _matrix(unique)
    flips = [0] + ([1 << k for k in range(16)] if probe_radius >= 1 else [])
    probes: list[set[int]] = [set() for _ in range(BANK_BANDS)]
    for value in unique:
        for index, band in enumerate(_bands(value)):
            probes[index].update(band ^ flip for flip in flips)
    words = (HashBankFrame.w0, HashBankFrame.w1, HashBankFrame.w2, HashBankFrame.w3)
    candidates: set[int] = set()
    with db.session() as session:
        connection = session.connection()  # Core rows: no ORM loading per row
        seen: set[int] = set()
        for index in range(BANK_BANDS):
            column = getattr(HashBankFrame, f"b{index}")
            values = sorted(probes[index])
            for start in range(0, len(values), IN_LIST_CHUNK):
                rows = connection.execute(
                    select(HashBankFrame.id, HashBankFrame.entry_id, HashBankFrame.quality, *words).where(
                        column.in_(values[start : start + IN_LIST_CHUNK])
                    )
                ).all()
                fresh = [r for r in rows if r[0] not in seen and r[2] >= quality]
                seen.update(r[0] for r in rows)
                if not fresh:
                    continue
                near = _distances(np.array([_unsigned(tuple(r[3:])) for r in fresh], dtype=np.uint64), query)
                candidates.update(r[1] for r, d in zip(fresh, near.min(axis=1), strict=True) if d <= distance)
        if not candidates:
            return []
        entries = session.execute(
            select(HashBankEntry.id, HashBankEntry.name, HashBank.name)
            .join(HashBank, HashBank.id == HashBankEntry.bank_id)
            .where(HashBankEntry.id.in_(sorted(candidates)))
        ).all()
        frames: dict[int, list[list[int]]] = defaultdict(list)
        for entry_id, q, *w in session.execute(
            select(HashBankFrame.entry_id, HashBankFrame.quality, *words).where(
                HashBankFrame.entry_id.in_(sorted(candidates))
            )
        ).all():
            if q >= quality:
                frames[entry_id].append(_unsigned(tuple(w)))
    mine = _matrix(usable)
    matches = []
    for entry_id, entry_name, bank_name in entries:
        theirs = np.array(frames[entry_id], dtype=np.uint64)
        if not len(theirs):
            continue
        close = _distances(mine, theirs) <= distance
        query_percent = 100.0 * float(close.any(axis=1).mean())
        entry_percent = 100.0 * float(close.any(axis=0).mean())
        if query_percent >= percent or entry_percent >= percent:
            matches.append(
                HashMatch(
                    bank=bank_name,
                    entry_id=entry_id,
                    entry_name=entry_name,
                    query_match_percent=round(query_percent, 2),
                    entry_match_percent=round(entry_percent, 2),
                )
            )
    return sorted(matches, key=lambda m: (m.bank, m.entry_id))
