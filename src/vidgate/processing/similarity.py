"""Near-duplicate search over frame hashes with multi-index hashing (MIH).

Each 64-bit frame hash is stored with its four 16-bit bands in indexed columns. Candidate
videos are those sharing at least one band with one of the query's frames: an index
lookup per band on plain SQLite or PostgreSQL, no extension needed. Two frames within
Hamming distance 3 always share a band (pigeonhole); farther matches are found through the
many frames a copy shares. Candidates are then scored exactly, frame by frame and both ways
as vPDQ does: the share of the query's sampled frames that have a frame within
``max_distance`` bits in the candidate, and the share of the candidate's found in the query;
the larger counts (a 5 s clip inside a long video is most of the clip), and the matched
frames' first and last seconds in both videos are reported. Frame sets, not sequences, are
compared for the shares, so a speed change or a reordering does not matter. A clip that is a
small part of both videos (4 s of a 10 s video inside a 12 s one: shares 0.4 and 0.33) is
found by its order instead: ``PROCESSING_SIMILARITY_MIN_RUN`` consecutive lit samples (black
frames all hash alike and never count) matching the other's frames in the same order, each
match 0 to 2 samples after the last (speed changes up to 2x). Measured on real clips
(bench/near_duplicates.py): copies match runs of 5-10 samples, the 59 unrelated pairs not one
frame within the distance, so a run of 3 is far from both.

A second stage compares video embeddings (the shipped open_nsfw pooled layer): a 20 % crop
changes every frame hash but hardly what the network sees (cosine 0.98 for bikes cropped by
20 %, against 0.72 for the closest unrelated pair of real clips in bench/near_duplicates.py and
0.94 for two synthetic test scenes of one generator: hence the 0.96 default).

Frame hashes belong to contents (the bytes); a match is reported as the caller's own video
of that content. In the shared library a match the caller does not own is reported with no
video id at all: it says that such a video exists, never whose it is, what it is called or
any id that leads to it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np
from sqlalchemy import Select, or_, select

from vidgate.db.engine import Database
from vidgate.db.models import Content, ContentEmbedding, FrameHash, Video, VideoStatus
from vidgate.processing.analyzers.framestats import BLACK_LUMA
from vidgate.processing.hashbits import bands, to_unsigned
from vidgate.processing.models import SimilarVideo, VideoAnalysisResult

QUERY_FRAMES = 256  # at most this many of the query's frames look for candidates
MAX_CANDIDATES = 50


def find_similar(
    db: Database,
    result: VideoAnalysisResult,
    *,
    content_id: str,
    user_id: str,
    shared: bool,
    max_distance: int,
    min_score: float,
    min_run: int = 0,
    embedding_min_cosine: float = 1.0,
    embedding_max_videos: int = 5000,
) -> list[SimilarVideo]:
    """Videos resembling ``result`` (the analysis of ``content_id``): among ``user_id``'s own
    completed videos, or in the whole library with ``shared`` (others' without an id). A video
    is reported when either share of matched frames reaches ``min_score``, or ``min_run``
    consecutive lit samples of this video match its frames in order (:func:`longest_run`)."""
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
    # the caller's videos that have completed: a video still waiting shows nothing yet
    owned = select(Video.content_id, Video.id).where(Video.user_id == user_id, Video.status == VideoStatus.COMPLETED)
    with db.session() as session:
        query = select(FrameHash.content_id).where(
            FrameHash.content_id != content_id,
            or_(*(column.in_(sorted(values)) for column, values in zip(columns, band_values, strict=True))),
        )
        if not shared:
            query = query.where(FrameHash.content_id.in_(owned.with_only_columns(Video.content_id)))
        counts: dict[str, int] = defaultdict(int)
        for (candidate,) in session.execute(query).all():
            counts[candidate] += 1
        candidates = sorted(counts, key=counts.__getitem__, reverse=True)[:MAX_CANDIDATES]
        frames: dict[str, list[tuple[int, float]]] = defaultdict(list)
        mine: dict[str, str] = {}
        if candidates:
            rows = session.execute(
                select(FrameHash.content_id, FrameHash.hash, FrameHash.timestamp).where(
                    FrameHash.content_id.in_(candidates)
                )
            ).all()
            for candidate, value, stamp in rows:
                frames[candidate].append((to_unsigned(value), stamp))
            mine = {str(c): str(v) for c, v in session.execute(owned.where(Video.content_id.in_(candidates))).all()}
    query_hashes = np.array(hashes, dtype=np.uint64)
    query_mirrored = np.array(mirrored, dtype=np.uint64) if len(mirrored) == len(hashes) else None
    query_times = np.array([sample.timestamp for sample in result.samples], dtype=np.float64)
    lit = np.array([sample.mean_luma >= BLACK_LUMA for sample in result.samples], dtype=bool)
    similar = []
    for candidate, theirs in sorted(frames.items()):
        order = np.argsort([stamp for _, stamp in theirs], kind="stable")  # in time, for the run
        stored = np.array([theirs[i][0] for i in order], dtype=np.uint64)
        times = np.array([theirs[i][1] for i in order], dtype=np.float64)
        # a video is either mirrored or not: the better reading counts
        readings = [query_hashes] + ([query_mirrored] if query_mirrored is not None else [])
        reading, (mine_matched, theirs_matched) = max(
            ((reading, _matches(reading, stored, max_distance)) for reading in readings),
            key=lambda m: max(m[1][0].mean(), m[1][1].mean()),
        )
        query_share, match_share = float(mine_matched.mean()), float(theirs_matched.mean())
        score = max(query_share, match_share)  # both ways, as vPDQ: a short clip inside a long video
        if score >= min_score or (min_run and longest_run(reading, stored, max_distance, lit)[0] >= min_run):
            similar.append(
                SimilarVideo(
                    video_id=mine.get(candidate),
                    similarity=round(score, 3),
                    matched_frames=int(mine_matched.sum()),
                    query_share=round(query_share, 3),
                    match_share=round(match_share, 3),
                    query_start=_edge(query_times[mine_matched], min),
                    query_end=_edge(query_times[mine_matched], max),
                    match_start=_edge(times[theirs_matched], min),
                    match_end=_edge(times[theirs_matched], max),
                    hamming_threshold=max_distance,
                )
            )
    if embedding_min_cosine < 1:
        found = {s.video_id for s in similar}
        for video in _embedding_matches(
            db,
            result,
            content_id=content_id,
            owned=None if shared else owned,
            mine=owned,
            min_cosine=embedding_min_cosine,
            max_videos=embedding_max_videos,
            max_distance=max_distance,
        ):
            if video.video_id is None or video.video_id not in found:
                similar.append(video)
    return sorted(similar, key=lambda s: s.similarity, reverse=True)


def _edge(values: np.ndarray, pick: Callable[[np.ndarray], float]) -> float | None:
    return round(float(pick(values)), 3) if len(values) else None


#: the embeddings the second stage's cosine threshold was measured with (bench/near_duplicates.py)
EMBEDDING_MODEL_PREFIX = "open_nsfw"


def _embedding_matches(
    db: Database,
    result: VideoAnalysisResult,
    *,
    content_id: str,
    owned: Select[str, str] | None,
    mine: Select[str, str],
    min_cosine: float,
    max_videos: int,
    max_distance: int,
) -> list[SimilarVideo]:
    """The second stage: videos whose embedding is within ``min_cosine`` of this one's (a crop
    changes every frame hash but hardly what the network sees), among the newest ``max_videos``
    the caller may see (``owned``; None: the shared library)."""
    embeddings = result.embeddings
    if (
        embeddings.status != "ok"
        or embeddings.video_embedding is None
        or not embeddings.model_type.startswith(EMBEDDING_MODEL_PREFIX)
        or max_videos == 0
    ):
        return []
    query = np.array(embeddings.video_embedding, dtype=np.float32)
    statement = (
        select(ContentEmbedding.content_id, ContentEmbedding.vector)
        .join(Content, Content.id == ContentEmbedding.content_id)
        .where(ContentEmbedding.content_id != content_id, ContentEmbedding.model_type == embeddings.model_type)
        .order_by(Content.finished_at.desc())
        .limit(max_videos)
    )
    if owned is not None:
        statement = statement.where(ContentEmbedding.content_id.in_(owned.with_only_columns(Video.content_id)))
    with db.session() as session:
        rows = session.execute(statement).all()
        if not rows:
            return []
        vectors = np.stack([np.frombuffer(vector, dtype=np.float32) for _, vector in rows])
        if vectors.shape[1] != len(query):
            return []
        cosines = vectors @ query
        close = [(str(rows[int(i)][0]), float(cosines[i])) for i in np.flatnonzero(cosines >= min_cosine)]
        names: dict[str, str] = {}
        if close:
            names = {
                str(c): str(v)
                for c, v in session.execute(mine.where(Video.content_id.in_([c for c, _ in close]))).all()
            }
    return [
        SimilarVideo(
            video_id=names.get(candidate),
            similarity=round(cosine, 3),
            method="embedding",
            matched_frames=0,
            hamming_threshold=max_distance,
        )
        for candidate, cosine in close
    ]


def _matches(mine: np.ndarray, theirs: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Which of ``mine`` have a hash in ``theirs`` within ``max_distance`` bits, and which of
    ``theirs`` have one in ``mine`` (vectorised, in blocks so a long video never builds one huge
    matrix)."""
    mine_matched = np.zeros(len(mine), dtype=bool)
    theirs_matched = np.zeros(len(theirs), dtype=bool)
    for start in range(0, len(mine), 512):
        close = np.bitwise_count(mine[start : start + 512, None] ^ theirs[None, :]) <= max_distance
        mine_matched[start : start + 512] = close.any(axis=1)
        theirs_matched |= close.any(axis=0)
    return mine_matched, theirs_matched


def _matched_frames(mine: np.ndarray, theirs: np.ndarray, max_distance: int) -> int:
    """How many of ``mine`` have a hash in ``theirs`` within ``max_distance`` bits (vectorised,
    in blocks so a long video never builds one huge matrix)."""
    matched = 0
    for start in range(0, len(mine), 512):
        block = mine[start : start + 512, None] ^ theirs[None, :]
        matched += int((np.bitwise_count(block).min(axis=1) <= max_distance).sum())
    return matched


def longest_run(
    mine: np.ndarray, theirs: np.ndarray, max_distance: int, usable: np.ndarray | None = None, max_step: int = 2
) -> tuple[int, int, int]:
    """The longest run of consecutive samples of ``mine`` that match samples of ``theirs`` in
    the same order (each next match 0 to ``max_step`` samples further on: a speed change of
    up to 2x is still one run); ``usable`` (default all) says which of ``mine`` may take part.
    Returns (length, first sample of the run in ``mine``, its match in ``theirs``)."""
    best = (0, -1, -1)
    previous: dict[int, tuple[int, int, int]] = {}  # theirs index -> (length, start mine, start theirs)
    for i in range(len(mine)):
        current: dict[int, tuple[int, int, int]] = {}
        if usable is None or usable[i]:
            for j in np.flatnonzero(np.bitwise_count(theirs ^ mine[i]) <= max_distance).tolist():
                chained = [previous[j - step] for step in range(max_step + 1) if j - step in previous]
                length, start_i, start_j = max(chained) if chained else (0, i, j)
                current[j] = (length + 1, start_i, start_j)
                best = max(best, current[j])
        previous = current
    return best
