"""Analyses in an analysis child process: the same result as in this process, progress reported
to the parent as it comes, a cancelled job stopped, a killed child failing its jobs as a
transient error (the job is retried and completes), remote files read through the parent."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from sqlalchemy import select

from tests.media import make_video
from tests.processing.test_queue import _stored_video
from vidgate.db.models import Video, VideoStatus
from vidgate.processing import lease
from vidgate.processing.analyser import AnalysisCrashed, ChildAnalyser, ChildLimits, InProcessAnalyser
from vidgate.processing.models import VideoAnalysisResult
from vidgate.processing.stages import PipelineConfig, PipelineError


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("analyser") / "clip.mp4", frames=75)


@pytest.fixture
def child() -> Iterator[ChildAnalyser]:
    analyser = ChildAnalyser(ChildLimits(idle_seconds=0))
    try:
        yield analyser
    finally:
        analyser.close()


def _config(tmp_path: Path, moderation: bool = False) -> PipelineConfig:
    return PipelineConfig(model_dir=tmp_path / "models", moderation=moderation)


def _analyse(
    analyser: Any,
    source: Path | BinaryIO,
    tmp_path: Path,
    progress: Callable[[str, float], None] = lambda stage, fraction: None,
    moderation: bool = False,
) -> VideoAnalysisResult:
    pictures = tmp_path / f"pictures-{time.monotonic_ns()}"
    pictures.mkdir()
    result: VideoAnalysisResult = analyser.analyse(
        source,
        video_id="content-1",
        content_hash="h",
        model_type="resnet50",
        config=_config(tmp_path, moderation),
        progress=progress,
        pictures_dir=pictures,
    )
    return result


def _comparable(result: VideoAnalysisResult) -> dict[str, Any]:
    return result.model_dump(exclude={"stages", "processing_seconds", "created_at"})


def test_the_child_gives_the_same_result_and_reports_progress_in_the_calling_thread(
    child: ChildAnalyser, clip: Path, tmp_path: Path
) -> None:
    reports: list[tuple[str, float, int]] = []

    def progress(stage: str, fraction: float) -> None:
        reports.append((stage, fraction, threading.get_ident()))

    ours = _analyse(InProcessAnalyser(), clip, tmp_path, moderation=True)
    theirs = _analyse(child, clip, tmp_path, progress, moderation=True)
    assert child.pid is not None and child.pid != os.getpid()
    assert _comparable(theirs) == _comparable(ours)
    assert theirs.moderation is not None and theirs.moderation.nsfw.status == "ok"  # the network ran there
    assert [stage for stage, _, _ in reports][:2] == ["metadata", "keyframes"]
    assert reports[-1][:2] == ("embeddings", 1.0)
    assert {ident for _, _, ident in reports} == {threading.get_ident()}
    first = child.pid
    _analyse(child, clip, tmp_path)
    assert child.pid == first  # the child stays for the next job


def test_a_remote_file_is_read_through_the_parent(child: ChildAnalyser, clip: Path, tmp_path: Path) -> None:
    reads: list[int] = []

    class Remote:
        """A seekable file object, as S3's RangeReader is (the child cannot open it itself)."""

        def __init__(self) -> None:
            self.handle = clip.open("rb")

        def seek(self, offset: int, whence: int = 0) -> int:
            return self.handle.seek(offset, whence)

        def read(self, size: int = -1) -> bytes:
            reads.append(size)
            return self.handle.read(size)

    remote = Remote()
    try:
        result = _analyse(child, remote, tmp_path)  # type: ignore[arg-type]
    finally:
        remote.handle.close()
    assert reads
    assert _comparable(result) == _comparable(_analyse(InProcessAnalyser(), clip, tmp_path))


def test_what_progress_raises_stops_the_job_and_the_child_goes_on(
    child: ChildAnalyser, clip: Path, tmp_path: Path
) -> None:
    def lost(stage: str, fraction: float) -> None:
        if stage == "keyframes":
            raise lease.LeaseLost("superseded")

    with pytest.raises(lease.LeaseLost):
        _analyse(child, clip, tmp_path, lost)
    pid = child.pid
    assert pid is not None
    assert _analyse(child, clip, tmp_path).samples  # the same child analyses the next one
    assert child.pid == pid


def test_an_undecodable_video_is_a_pipeline_error(child: ChildAnalyser, tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    with pytest.raises(PipelineError):
        _analyse(child, broken, tmp_path)


def test_a_killed_child_fails_its_job_and_the_next_job_gets_a_new_one(
    child: ChildAnalyser, clip: Path, tmp_path: Path
) -> None:
    _analyse(child, clip, tmp_path)
    killed = child.pid
    assert killed is not None

    def kill(stage: str, fraction: float) -> None:
        if stage == "metadata":  # the first report: the child is mid-job
            os.kill(killed, signal.SIGKILL)
            time.sleep(0.5)

    with pytest.raises(AnalysisCrashed, match="killed by signal 9"):
        _analyse(child, clip, tmp_path, kill)
    assert _analyse(child, clip, tmp_path).samples
    assert child.pid is not None and child.pid != killed


def test_a_child_over_its_memory_limit_fails_the_job(clip: Path, tmp_path: Path) -> None:
    analyser = ChildAnalyser(ChildLimits(memory_bytes=32 << 20, idle_seconds=0))
    try:
        with pytest.raises(AnalysisCrashed):
            _analyse(analyser, clip, tmp_path)
    finally:
        analyser.close()


def test_the_child_ends_when_idle(clip: Path, tmp_path: Path) -> None:
    analyser = ChildAnalyser(ChildLimits(idle_seconds=0.2))
    try:
        _analyse(analyser, clip, tmp_path)
        assert analyser.pid is not None
        deadline = time.monotonic() + 10
        while analyser.pid is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert analyser.pid is None
        assert _analyse(analyser, clip, tmp_path).samples  # a new one for the next job
    finally:
        analyser.close()


def test_a_job_whose_child_was_killed_is_retried_and_completes(
    services_for: Callable[..., Any], tmp_path: Path
) -> None:
    """The lease is the parent's: a killed child is a transient failure (queued again, with
    backoff), and the retry stores the result once."""
    real = ChildAnalyser(ChildLimits(idle_seconds=0))

    class KillsItsChild:
        def analyse(self, *args: Any, progress: Callable[[str, float], None], **kwargs: Any) -> VideoAnalysisResult:
            def report(stage: str, fraction: float) -> None:
                progress(stage, fraction)
                if stage == "keyframes" and real.pid is not None:
                    os.kill(real.pid, signal.SIGKILL)
                    time.sleep(0.5)

            return real.analyse(*args, progress=report, **kwargs)

        def close(self) -> None:
            pass

    try:
        with services_for(processing={"max_retries": 2, "retry_backoff_seconds": 0.05}) as services:
            video_id = _stored_video(services, tmp_path)
            services.processing.analyser = KillsItsChild()
            outcome = services.processing.run(video_id)
            assert outcome.status == "retry" and outcome.retry_in == pytest.approx(0.05)
            with services.db.session() as session:
                video = session.get_one(Video, video_id)
                assert video.status is VideoStatus.QUEUED and video.lease_expires_at is None
                assert "killed by signal 9" in (video.error_message or "")
            services.processing.analyser = real
            assert services.processing.run(video_id, 1).status == "completed"
            with services.db.session() as session:
                video = session.get_one(Video, video_id)
                assert video.status is VideoStatus.COMPLETED and video.attempts == 2
                assert session.scalars(select(Video.id).where(Video.status != VideoStatus.COMPLETED)).all() == []
    finally:
        real.close()
