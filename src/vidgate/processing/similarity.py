"""Near-duplicate search over frame hashes with multi-index hashing (MIH).

Each 64-bit frame hash is stored with its four 16-bit bands in indexed columns. Candidate
videos are those sharing at least one band with one of the query's frames: an index
lookup per band on plain SQLite or PostgreSQL, no extension needed. Two frames within
Hamming distance 3 always share a band (pigeonhole); farther matches are found through the
many frames a copy shares. Candidates are then scored exactly: the share of the query's
sampled frames that have a frame within ``max_distance`` bits in the candidate.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from sqlalchemy import or_, select

from vidgate.db.engine import Database
from vidgate.db.models import FrameHash, SessionStatus, UploadSession
from vidgate.processing.analyzers.phash import bands, to_unsigned
from vidgate.processing.models import SimilarVideo, VideoAnalysisResult

QUERY_FRAMES = 256  # at most this many of the query's frames look for candidates
MAX_CANDIDATES = 50


def find_similar(
    db: Database,
    result: VideoAnalysisResult,
    *,
    user_id: str | None,
    max_distance: int,
    min_score: float,
) -> list[SimilarVideo]:
    """Videos resembling ``result``'s video; among ``user_id``'s own videos unless None (shared)."""
    hashes = [int(sample.phash, 16) for sample in result.samples]
    if not hashes:
        return []
    # A flipped copy's frames hash like this video's mirrored frames: search with both.
    mirrored = [int(s.phash_mirror, 16) for s in result.samples if s.phash_mirror is not None]
    step = max(1, len(hashes) // QUERY_FRAMES)
    probe = hashes[::step] + mirrored[::step]
    band_values: list[set[int]] = [set(), set(), set(), set()]
    for value in probe:
        for index, band in enumerate(bands(value)):
            band_values[index].add(band)
    columns = (FrameHash.band0, FrameHash.band1, FrameHash.band2, FrameHash.band3)
    with db.session() as session:
        query = select(FrameHash.video_id).where(
            FrameHash.video_id != result.video_id,
            or_(*(column.in_(sorted(values)) for column, values in zip(columns, band_values, strict=True))),
        )
        if user_id is not None:
            owned = select(UploadSession.video_id).where(
                UploadSession.user_id == user_id,
                UploadSession.status == SessionStatus.COMPLETED,
                UploadSession.video_id.is_not(None),
            )
            query = query.where(FrameHash.video_id.in_(owned))
        counts: dict[str, int] = defaultdict(int)
        for (video_id,) in session.execute(query).all():
            counts[video_id] += 1
        candidates = sorted(counts, key=counts.__getitem__, reverse=True)[:MAX_CANDIDATES]
        frames: dict[str, list[int]] = defaultdict(list)
        if candidates:
            rows = session.execute(
                select(FrameHash.video_id, FrameHash.hash).where(FrameHash.video_id.in_(candidates))
            ).all()
            for video_id, value in rows:
                frames[video_id].append(to_unsigned(value))
    mine = np.array(hashes, dtype=np.uint64)
    mine_mirrored = np.array(mirrored, dtype=np.uint64) if len(mirrored) == len(hashes) else None
    similar = []
    for video_id, theirs in frames.items():
        stored = np.array(theirs, dtype=np.uint64)
        matched = _matched_frames(mine, stored, max_distance)
        if mine_mirrored is not None:  # a video is either mirrored or not: the better reading counts
            matched = max(matched, _matched_frames(mine_mirrored, stored, max_distance))
        score = matched / len(hashes)
        if score >= min_score:
            similar.append(
                SimilarVideo(
                    video_id=video_id,
                    similarity=round(score, 3),
                    matched_frames=matched,
                    hamming_threshold=max_distance,
                )
            )
    return sorted(similar, key=lambda s: s.similarity, reverse=True)


def _matched_frames(mine: np.ndarray, theirs: np.ndarray, max_distance: int) -> int:
    """How many of ``mine`` have a hash in ``theirs`` within ``max_distance`` bits (vectorised,
    in blocks so a long video never builds one huge matrix)."""
    matched = 0
    for start in range(0, len(mine), 512):
        block = mine[start : start + 512, None] ^ theirs[None, :]
        matched += int((np.bitwise_count(block).min(axis=1) <= max_distance).sum())
    return matched
