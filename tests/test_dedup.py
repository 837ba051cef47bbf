"""The dedup decision: what each owner is told, and what is queued, in both scopes."""

from __future__ import annotations

import pytest

from vidgate.db.models import AnalysisStatus, Content, Video, VideoStatus, utcnow
from vidgate.dedup import DedupDecision, DedupScope, decide


def rows(content: AnalysisStatus, video: VideoStatus | None = None) -> tuple[Content, Video]:
    return (
        Content(content_hash="a" * 64, status=content, analysing_video_id=None),
        Video(status=video or VideoStatus.UPLOADED, priority=5, dispatched_at=None),
    )


def run(
    content: Content,
    video: Video,
    *,
    content_is_new: bool = False,
    video_is_new: bool = True,
    scope: DedupScope = "owner",
    enabled: bool = True,
    priority: int = 5,
) -> DedupDecision:
    return decide(
        content,
        video,
        content_is_new=content_is_new,
        video_is_new=video_is_new,
        scope=scope,
        enabled=enabled,
        priority=priority,
        options={"model_type": "x"},
        now=utcnow(),
    )


@pytest.mark.parametrize("scope", ["owner", "global"])
def test_new_bytes_are_queued_and_no_duplicate(scope: DedupScope) -> None:
    content, video = rows(AnalysisStatus.PENDING)
    assert run(content, video, content_is_new=True, scope=scope) == DedupDecision(queue_job=True, duplicate=False)
    assert video.status is VideoStatus.QUEUED and video.processing_options == {"model_type": "x"}


@pytest.mark.parametrize("analysis", list(AnalysisStatus))
def test_owner_scope_hides_another_owners_upload(analysis: AnalysisStatus) -> None:
    content, video = rows(analysis)
    assert run(content, video) == DedupDecision(queue_job=True, duplicate=False)
    assert video.status is VideoStatus.QUEUED  # processed as a first upload (its job may reuse)
    expected = AnalysisStatus.PENDING if analysis is AnalysisStatus.FAILED else analysis
    assert content.status is expected  # a stored analysis stays, a failed one is tried again


def test_global_scope_answers_at_once_from_a_stored_analysis() -> None:
    content, video = rows(AnalysisStatus.COMPLETED)
    assert run(content, video, scope="global") == DedupDecision(queue_job=False, duplicate=True)
    assert video.status is VideoStatus.COMPLETED and video.finished_at is not None


@pytest.mark.parametrize("analysis", [AnalysisStatus.PENDING, AnalysisStatus.PROCESSING])
def test_global_scope_tells_of_an_analysis_under_way_and_queues_the_video(analysis: AnalysisStatus) -> None:
    content, video = rows(analysis)
    assert run(content, video, scope="global") == DedupDecision(queue_job=True, duplicate=True)


def test_with_dedup_disabled_a_stored_analysis_is_redone() -> None:
    content, video = rows(AnalysisStatus.COMPLETED)
    assert run(content, video, enabled=False, scope="global") == DedupDecision(queue_job=True, duplicate=True)
    assert content.status is AnalysisStatus.PENDING


def test_the_same_owner_again_gets_a_duplicate_of_the_same_video() -> None:
    content, video = rows(AnalysisStatus.COMPLETED, VideoStatus.COMPLETED)
    assert run(content, video, video_is_new=False) == DedupDecision(queue_job=False, duplicate=True)
    content, video = rows(AnalysisStatus.PROCESSING, VideoStatus.QUEUED)
    assert run(content, video, video_is_new=False, priority=9) == DedupDecision(queue_job=False, duplicate=True)
    assert video.priority == 9  # the more urgent upload decides while the broker has not taken it
    content, video = rows(AnalysisStatus.FAILED, VideoStatus.FAILED)
    assert run(content, video, video_is_new=False) == DedupDecision(queue_job=True, duplicate=True)
    assert video.status is VideoStatus.QUEUED and content.status is AnalysisStatus.PENDING
