"""Validation of a file read by ranges where it is (what an upload completed in a bucket is):
the same verdicts as from a local path, the probe child fed over its pipe, no local copy.

The ranged file here reads a local file by ``pread`` and counts what was asked of it; the
S3 one (``ObjectFile``: ranged GETs of Swift) goes through the same interface in the storage
tests and every S3 server test."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.media import CONTAINERS, make_video
from vidgate.config import ValidationSettings
from vidgate.errors import TrailingData, TruncatedFile, VidgateError
from vidgate.validation import pipeline
from vidgate.validation.pipeline import FileValidator, _Target


class CountingReader:
    """A reader of :class:`RangedFile` over a local file, counting reads and bytes."""

    def __init__(self, owner: RangedLocal) -> None:
        self.owner = owner
        self.position = 0

    def pread(self, length: int, offset: int, /) -> bytes:
        data = os.pread(self.owner.fd, max(0, min(length, self.owner.size - offset)), offset)
        self.owner.reads += 1
        self.owner.fetched += len(data)
        self.owner.largest = max(self.owner.largest, len(data))
        return data

    def read(self, size: int = -1, /) -> bytes | None:
        data = self.pread(self.owner.size - self.position if size < 0 else size, self.position)
        self.position += len(data)
        return data

    def close(self) -> None:
        return None


class RangedLocal:
    """A :class:`vidgate.storage.base.RangedFile` that is a local file read only by ranges."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self.fd).st_size
        self.name = path.name
        self.reads = self.fetched = self.largest = 0
        self.windows: list[int | None] = []

    def reader(self, window: int | None = None) -> CountingReader:
        self.windows.append(window)
        return CountingReader(self)

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ranged")
    return {name: make_video(root / f"clip.{ext}", name) for name, (_, _, ext) in CONTAINERS.items()}


def _verdict(validator: FileValidator, source: Path | RangedLocal, extension: str) -> object:
    try:
        return validator.validate(source, extension, None)
    except VidgateError as exc:
        return (type(exc), exc.code)


@pytest.mark.parametrize("container", ["mp4", "mkv", "webm", "avi", "ogg"])
def test_a_ranged_file_gets_the_verdict_of_the_same_local_file(files: dict[str, Path], container: str) -> None:
    path = files[container]
    extension = CONTAINERS[container][2]
    ranged = RangedLocal(path)
    try:
        validator = FileValidator(ValidationSettings())
        local = validator.validate(path, extension, None)
        remote = validator.validate(ranged, extension, None)
        assert remote == local and remote.width == 160
        # the walk asked for small windows; the probe and its reads went through the pipe in
        # blocks bounded by what one read may be served (never the file in one piece)
        assert ranged.windows[0] == pipeline.WALK_WINDOW
        assert ranged.largest <= pipeline.MAX_PROBE_READ
    finally:
        ranged.close()


def test_refusals_are_the_same_from_a_ranged_file(files: dict[str, Path], tmp_path: Path) -> None:
    data = files["mp4"].read_bytes()
    cases = {
        "cut.mp4": data[: len(data) // 2],
        "appended.mp4": data + b"MZ" + os.urandom(4000),
        "plain.mp4": data,
    }
    validator = FileValidator(ValidationSettings())
    for name, body in cases.items():
        path = tmp_path / name
        path.write_bytes(body)
        ranged = RangedLocal(path)
        try:
            assert _verdict(validator, ranged, "mp4") == _verdict(validator, path, "mp4"), name
        finally:
            ranged.close()
    ranged = RangedLocal(tmp_path / "cut.mp4")
    try:
        with pytest.raises(TruncatedFile):
            validator.validate(ranged, "mp4", None)
    finally:
        ranged.close()
    (tmp_path / "tail.mp4").write_bytes(data + os.urandom(100))
    ranged = RangedLocal(tmp_path / "tail.mp4")
    try:
        with pytest.raises(TrailingData):
            validator.validate(ranged, "mp4", None)
    finally:
        ranged.close()


def test_a_ranged_file_is_probed_in_a_fresh_interpreter_where_no_warm_child_can_be(files: dict[str, Path]) -> None:
    ranged = RangedLocal(files["mkv"])
    try:
        reader = ranged.reader()
        limits = {
            "memory_bytes": 512 << 20,
            "cpu_seconds": 30,
            "max_width": 4096,
            "max_height": 4096,
            "max_duration": 3600.0,
        }
        result = pipeline._probe_over_connection_in_fresh_interpreter(
            _Target(("ranges", ranged.size), reader, ranged.name), limits, 60.0
        )
        assert result is not None and result.get("width") == 160 and "error" not in result, result
        assert ranged.reads >= 1
    finally:
        ranged.close()


def test_an_early_probe_gives_the_verdict_of_a_probe_at_validation(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A probe sent the file before its other checks (``start_probe``) decides as the probe at
    validation would, and validation then forks no probe of its own."""
    data = files["mp4"].read_bytes()
    cases = {"plain.mp4": data, "cut.mp4": data[: len(data) // 2], "appended.mp4": data + os.urandom(100)}
    validator = FileValidator(ValidationSettings())
    verdicts = {}
    for name, body in cases.items():
        (tmp_path / name).write_bytes(body)
        verdicts[name] = _verdict(validator, tmp_path / name, "mp4")
    assert verdicts["plain.mp4"] != verdicts["cut.mp4"]

    def no_second_probe(*args: object, **kwargs: object) -> object:
        raise AssertionError("validation probed again although an early probe had the file")

    monkeypatch.setattr(pipeline, "_probe_in_warm_child", no_second_probe)
    for name in cases:
        early = validator.start_probe(tmp_path / name)
        assert early is not None
        try:
            try:
                verdict: object = validator.validate(tmp_path / name, "mp4", None, early)
            except VidgateError as exc:
                verdict = (type(exc), exc.code)
        finally:
            early.close()
        assert verdict == verdicts[name], name


def test_an_early_probe_of_another_file_is_not_taken(files: dict[str, Path], tmp_path: Path) -> None:
    data = files["mp4"].read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    validator = FileValidator(ValidationSettings())
    early = validator.start_probe(files["mp4"])
    assert early is not None
    try:
        with pytest.raises(TruncatedFile):
            validator.validate(tmp_path / "cut.mp4", "mp4", None, early)
    finally:
        early.close()


def test_an_early_probe_never_asked_ends_its_child(tmp_path: Path) -> None:
    """An upload refused after its probe started (its record failed): the child goes with it,
    even one that would never finish by itself (here its file is a pipe nobody writes)."""
    stuck = tmp_path / "stuck.mkv"
    os.mkfifo(stuck)
    early = FileValidator(ValidationSettings()).start_probe(stuck)
    assert early is not None
    process = early.child[0]
    process.join(timeout=0.5)
    assert process.is_alive()  # blocked in opening the pipe
    early.close()
    early.close()  # twice is harmless
    process.join(timeout=10)
    assert not process.is_alive()


def test_a_probe_child_gone_before_its_file_is_replaced_once(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spare that died before it was sent its file is not the file's fault: validation takes
    another child and gives the file's own verdict."""
    take = pipeline._take_probe_child
    taken: list[object] = []

    def dead_first() -> Any:
        child = take()
        if not taken:
            child[0].kill()
            child[0].join(timeout=10)
        taken.append(child)
        return child

    monkeypatch.setattr(pipeline, "_take_probe_child", dead_first)
    info = FileValidator(ValidationSettings()).validate(files["mkv"], "mkv", None)
    assert info.width == 160 and len(taken) == 2


def test_a_spare_probes_the_clips_while_it_waits_only_when_no_other_probe_runs(tmp_path: Path) -> None:
    """The touch (our clips probed by a spare while it waits) makes the next probe quicker on an
    idle server and costs CPU a busy one lacks: the next spare touches them only while no other
    probe child is in use."""
    stuck = tmp_path / "stuck.mkv"
    os.mkfifo(stuck)
    in_use = pipeline._in_use
    if in_use == 0:
        assert pipeline._spare_touch() == pipeline._TOUCH_CLIPS != ()
    early = FileValidator(ValidationSettings()).start_probe(stuck)  # blocked on its pipe: in use
    assert early is not None
    try:
        assert pipeline._in_use == in_use + 1
        assert pipeline._spare_touch() == ()
    finally:
        early.close()
    assert pipeline._in_use == in_use


def test_a_child_taken_when_no_spare_was_ready_probes_no_clip_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """It is needed at once: probing the clips first would only delay its own probe."""
    start = pipeline._start_probe_child
    touched: list[tuple[str, ...]] = []

    def recording(touch_with: tuple[str, ...] = pipeline._TOUCH_CLIPS) -> Any:
        if threading.current_thread() is threading.main_thread():  # not a spare forked meanwhile
            touched.append(touch_with)
        return start(touch_with)

    monkeypatch.setattr(pipeline, "_start_probe_child", recording)
    with pipeline._spare_lock:
        spare, pipeline._spare = pipeline._spare, None
    if spare is not None:
        pipeline._end_probe_child(spare)
    pipeline._end_probe_child(pipeline._take_probe_child())
    assert touched == [()]
