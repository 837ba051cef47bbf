"""Container detection, the first-bytes check and the structure walk, on real files."""

from __future__ import annotations

import errno
import multiprocessing
import os
import re
import signal
from pathlib import Path

import av
import pytest

from tests.helpers import wait_until
from tests.media import CONTAINERS, iso_box, make_video, pe_executable
from vidgate.config import ValidationSettings
from vidgate.errors import DangerousContent, FormatMismatch, UndecodableVideo, UnrecognizedFormat
from vidgate.validation import pipeline
from vidgate.validation import probe as probe_module
from vidgate.validation.formats import CONTENT_TYPE_FORMATS, HEAD_BYTES, check_head, detect_format
from vidgate.validation.pipeline import FileValidator, warm_up_probes
from vidgate.validation.signatures import dangerous_inside, zip_end_record
from vidgate.validation.structure import walk

EXPECTED = {
    "mp4": "mp4",
    "m4v": "mp4",
    "3gp": "mp4",
    "3g2": "mp4",
    "mov": "mov",
    "mkv": "matroska",
    "webm": "webm",
    "avi": "avi",
    "ogg": "ogg",
    "ogv": "ogg",
}

# The declared types that name each container family, written out here rather than read from
# the table under test. Sources: IANA (video/mp4 RFC 4337, video/3gpp RFC 3839, video/3gpp2
# RFC 4393, video/matroska RFC 9559, video/ogg and application/ogg RFC 5334, video/vnd.avi),
# freedesktop shared-mime-info's aliases, and what browsers send (tests/web/test_page.py).
ISO_BMFF_TYPES = [
    "video/mp4",
    "application/mp4",
    "audio/mp4",
    "video/x-m4v",
    "audio/x-m4a",
    "audio/m4a",
    "video/mp4v-es",
    "video/quicktime",
    "video/3gpp",
    "video/3gp",
    "audio/3gpp",
    "video/3gpp2",
    "audio/3gpp2",
]
MATROSKA_TYPES = [
    "video/matroska",
    "video/x-matroska",
    "audio/matroska",
    "audio/x-matroska",
    "video/matroska-3d",
    "video/x-matroska-3d",
]
WEBM_TYPES = ["video/webm", "audio/webm"]
AVI_TYPES = [
    "video/x-msvideo",
    "video/avi",
    "video/msvideo",
    "video/vnd.avi",
    "video/x-avi",
    "video/divx",
    "video/vnd.divx",
]
OGG_TYPES = [
    "video/ogg",
    "application/ogg",
    "audio/ogg",
    "application/x-ogg",
    "video/x-ogg",
    "video/x-theora+ogg",
    "video/x-theora",
    "video/x-ogm+ogg",
    "video/x-ogm",
]
NAMING = {  # real file's container -> every type that names it
    "mp4": ISO_BMFF_TYPES,
    "m4v": ISO_BMFF_TYPES,
    "3gp": ISO_BMFF_TYPES,
    "3g2": ISO_BMFF_TYPES,
    "mov": ISO_BMFF_TYPES,
    "mkv": MATROSKA_TYPES,
    "webm": MATROSKA_TYPES + WEBM_TYPES,  # WebM is Matroska too
    "avi": AVI_TYPES,
    "ogg": OGG_TYPES,
    "ogv": OGG_TYPES,
}
EVERY_TYPE = ISO_BMFF_TYPES + MATROSKA_TYPES + WEBM_TYPES + AVI_TYPES + OGG_TYPES
GENERIC = [
    None,
    "",
    "  ",
    "application/octet-stream",
    "Application/Octet-Stream; charset=binary",
    "binary/octet-stream",
    "video/*",
]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("formats")
    return {name: make_video(root / f"clip.{ext}", name) for name, (_, _, ext) in CONTAINERS.items()}


@pytest.mark.parametrize("container", list(CONTAINERS))
def test_detects_every_container_and_walks_it_to_its_exact_end(files: dict[str, Path], container: str) -> None:
    path = files[container]
    data = path.read_bytes()
    detected = detect_format(data[:HEAD_BYTES])
    assert detected is not None and detected.name == EXPECTED[container]
    fd = os.open(path, os.O_RDONLY)
    try:
        structure = walk(fd, len(data), detected.name)
    finally:
        os.close(fd)
    assert structure.truncated is None
    assert structure.end == len(data)


def test_head_check_names_both_sides_of_a_mismatch(files: dict[str, Path]) -> None:
    head = files["mkv"].read_bytes()[:HEAD_BYTES]
    with pytest.raises(FormatMismatch, match=r"Matroska.*\.mp4"):
        check_head(head, "mp4", None)
    mp4 = files["mp4"].read_bytes()[:HEAD_BYTES]
    with pytest.raises(FormatMismatch, match=r"MP4.*video/webm"):
        check_head(mp4, "mp4", "video/webm")
    assert check_head(mp4, "mp4", "video/mp4; codecs=avc1").name == "mp4"
    assert check_head(mp4, "mov", "application/octet-stream").name == "mp4"
    with pytest.raises(UnrecognizedFormat):
        check_head(b"\x00" * 64, "mp4", None)
    with pytest.raises(DangerousContent, match="Windows executable"):
        check_head(pe_executable(), "mp4", None)


def test_the_alias_table_is_the_one_these_tests_expect() -> None:
    assert sorted(CONTENT_TYPE_FORMATS) == sorted(EVERY_TYPE)


@pytest.mark.parametrize("container", list(CONTAINERS))
def test_every_alias_of_the_files_container_is_accepted_and_every_other_refused(
    files: dict[str, Path], container: str
) -> None:
    """Each declared type against a real file of each container: the types of its family pass
    (in any case, with parameters), every other type is a mismatch whose message names what the
    file is and what the declared type stands for, which differ."""
    head = files[container].read_bytes()[:HEAD_BYTES]
    extension = CONTAINERS[container][2]
    for declared in NAMING[container]:
        for spelling in (declared, declared.upper(), f"{declared}; codecs=avc1"):
            assert check_head(head, extension, spelling).name == EXPECTED[container], spelling
    label = detect_format(head).label  # type: ignore[union-attr]
    for declared in sorted(set(EVERY_TYPE) - set(NAMING[container])):
        with pytest.raises(FormatMismatch) as refused:
            check_head(head, extension, declared)
        message = refused.value.message
        assert message.startswith(f"The file is {label}, but it was declared as {declared}, a type for "), message
        named = message.split(", a type for ")[1].split(";")[0]
        assert label not in named.split(" or "), message  # never "Matroska, but declared as <a Matroska type>"


@pytest.mark.parametrize("container", list(CONTAINERS))
def test_a_generic_or_missing_type_claims_nothing(files: dict[str, Path], container: str) -> None:
    head = files[container].read_bytes()[:HEAD_BYTES]
    for declared in GENERIC:
        assert check_head(head, CONTAINERS[container][2], declared).name == EXPECTED[container], declared


def test_a_type_of_no_video_container_is_refused_as_such(files: dict[str, Path]) -> None:
    head = files["mkv"].read_bytes()[:HEAD_BYTES]
    for declared in ("image/png", "video/x-flv", "text/html"):
        with pytest.raises(
            FormatMismatch, match=f"^The file is Matroska, but it was declared as {re.escape(declared)}, "
        ):
            check_head(head, "mkv", declared)
    with pytest.raises(FormatMismatch) as refused:
        check_head(head, "mkv", "video/x-flv")
    assert refused.value.message == (
        "The file is Matroska, but it was declared as video/x-flv, which is not the type of a supported video "
        "container; send it as video/matroska or without a type."
    )


def test_chromiums_matroska_type_is_accepted_and_a_real_mismatch_reads_as_one(files: dict[str, Path]) -> None:
    """Issue 13: Chromium declares .mkv as video/matroska (RFC 9559), which was refused with
    "The file is Matroska, but it was declared as video/matroska"."""
    head = files["mkv"].read_bytes()[:HEAD_BYTES]
    assert check_head(head, "mkv", "video/matroska").name == "matroska"
    with pytest.raises(FormatMismatch) as refused:
        check_head(head, "mkv", "video/mp4")
    assert refused.value.message == (
        "The file is Matroska, but it was declared as video/mp4, a type for MP4 (ISO BMFF) or QuickTime MOV; "
        "send it as video/matroska or without a type."
    )


def test_signature_helpers() -> None:
    assert dangerous_inside(b"\x00" * 100 + pe_executable()) == "a Windows executable (MZ/PE)"
    assert dangerous_inside(b"...<ScRiPt src=x>...") == "HTML/script code"
    assert dangerous_inside(b"an MZ inside, but no PE header" + b"\x00" * 100) is None
    assert dangerous_inside(b"MZ at the start of a region") == "a Windows executable (MZ/PE)"
    comment = b"hello"
    eocd = b"PK\x05\x06" + b"\x00" * 16 + len(comment).to_bytes(2, "little") + comment
    assert zip_end_record(b"video data" + eocd)
    assert not zip_end_record(b"video data" + eocd + b"more")


def test_opaque_boxes_are_reported(files: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "boxed.mp4"
    path.write_bytes(files["mp4"].read_bytes() + iso_box(b"free", b"x" * 10) + iso_box(b"zzzz", b"y" * 4))
    fd = os.open(path, os.O_RDONLY)
    try:
        structure = walk(fd, path.stat().st_size, "mp4")
    finally:
        os.close(fd)
    assert [label for _, _, label in structure.opaque_regions][-2:] == ["'free' box", "'zzzz' box"]
    assert structure.end == path.stat().st_size


def test_a_probe_that_hits_its_limits_is_a_refusal(files: dict[str, Path]) -> None:
    """The probe child limits its own address space and time: when it cannot finish, the file
    is refused, and the API process is unharmed."""
    # Where the first allocation fails depends on how much heap the spare child kept from its
    # warm-up clips. FFmpeg's ENOMEM (opening, decoding or demuxing), Python's MemoryError and a
    # decoder thread without a stack (EAGAIN) are named as a memory refusal; a child that died of
    # it is "could not be read safely"; a few failed frame allocations FFmpeg's decoder reports
    # as invalid data, which cannot be told from a bad frame.
    refusal = r"more memory than the probe may use \(64 MiB\)|could not be read safely|cannot be decoded"
    with pytest.raises(UndecodableVideo, match=refusal) as refused:
        FileValidator(ValidationSettings(probe_memory_mb=64)).validate(files["mp4"], "mp4", None)
    assert str(files["mp4"].parent) not in str(refused.value)  # the client never sees where we store files
    with pytest.raises(UndecodableVideo, match="took longer than"):
        FileValidator(ValidationSettings(probe_timeout_seconds=0.001)).validate(files["mp4"], "mp4", None)
    assert FileValidator(ValidationSettings()).validate(files["mp4"], "mp4", None).width == 160


@pytest.mark.parametrize(
    ("ffmpeg_errno", "step", "expected"),
    [
        (errno.ENOMEM, "truncated", "resources"),
        (errno.ENOMEM, "open", "resources"),
        (errno.EAGAIN, "decode", "resources"),
        (errno.EINVAL, "decode", "decode"),
        (errno.EIO, "truncated", "truncated"),
    ],
)
def test_running_out_of_memory_is_not_blamed_on_the_file(ffmpeg_errno: int, step: str, expected: str) -> None:
    """A step that fails for want of memory is reported as such, not as a broken file: CI once
    saw ENOMEM while demuxing come out as "the media data breaks off"."""
    with pytest.raises(av.FFmpegError) as raised:
        av.error.err_check(-ffmpeg_errno)  # the exception PyAV raises for this FFmpeg return code
    answer = probe_module._failure({"format": "mp4"}, step, raised.value)
    assert answer["error"] == expected and answer["format"] == "mp4"
    assert answer["message"] == os.strerror(ffmpeg_errno)  # FFmpeg's reason, no path or number
    if expected == "resources":
        message = f"Reading the file needed more memory than the probe may use (333 MiB): {os.strerror(ffmpeg_errno)}."
        with pytest.raises(UndecodableVideo, match=f"^{re.escape(message)}$"):
            FileValidator(ValidationSettings(probe_memory_mb=333))._judge(answer)


def test_the_fresh_interpreter_probe_gives_the_same_answer(files: dict[str, Path]) -> None:
    """Where no child can be forked from the warm probe server (a daemonic pool process), the
    probe runs as a script in a fresh interpreter: same limits, same answer."""
    validator = FileValidator(ValidationSettings())
    limits = {"memory_bytes": 1 << 30, "cpu_seconds": 60, "max_width": 7680, "max_height": 4320, "max_duration": 60}
    result = validator._probe_in_fresh_interpreter(files["mp4"], limits)
    assert result is not None and (result["width"], result["height"]) == (160, 120)
    assert validator._probe_in_fresh_interpreter(files["mp4"], {**limits, "memory_bytes": 64 << 20}) is None


def test_probes_run_in_a_child_forked_ahead_of_time(files: dict[str, Path]) -> None:
    """The next probe child is forked after a probe, off its time; a used child is reaped and a
    spare that died meanwhile is replaced on the spot."""
    warm_up_probes()
    spare = pipeline._spare
    assert spare is not None and spare[0].is_alive()
    validator = FileValidator(ValidationSettings())
    assert validator.validate(files["mp4"], "mp4", None).width == 160
    wait_until(lambda: pipeline._spare is not None and pipeline._spare is not spare, timeout=20)
    wait_until(lambda: spare[0].exitcode is not None, timeout=20)  # the used child was reaped
    replacement = pipeline._spare
    assert replacement is not None and replacement[0].pid is not None
    os.kill(replacement[0].pid, signal.SIGKILL)
    wait_until(lambda: not replacement[0].is_alive(), timeout=20)
    assert validator.validate(files["mkv"], "mkv", None).width == 160


def test_a_probe_child_that_died_before_its_file_came_is_replaced(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not the file's fault, so not a refusal: the probe runs again in a new child."""
    dead = pipeline._start_probe_child()
    os.kill(dead[0].pid or 0, signal.SIGKILL)
    wait_until(lambda: not dead[0].is_alive(), timeout=20)
    handed_out = _hand_out_first(dead, monkeypatch)
    assert FileValidator(ValidationSettings()).validate(files["mp4"], "mp4", None).width == 160
    assert len(handed_out) == 2


def _hand_out_first(child: pipeline._ProbeChild, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The next probe gets ``child``, later ones a real child; the list grows by one per child
    handed out."""
    handed_out: list[int] = []
    real_take = pipeline._take_probe_child

    def take_given_first() -> pipeline._ProbeChild:
        handed_out.append(1)
        return child if len(handed_out) == 1 else real_take()

    monkeypatch.setattr(pipeline, "_take_probe_child", take_given_first)
    return handed_out


class _KillAfterSend:
    """A probe child's connection whose child dies after the file was sent, before reading it."""

    def __init__(self, child: pipeline._ProbeChild) -> None:
        self.process, self.connection = child

    def send(self, message: object) -> None:
        self.connection.send(message)
        os.kill(self.process.pid or 0, signal.SIGKILL)
        wait_until(lambda: not self.process.is_alive(), timeout=20)

    def __getattr__(self, name: str) -> object:
        return getattr(self.connection, name)


def test_a_probe_child_that_died_with_its_file_unread_is_replaced(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request was sent, but the child never read it (its socket reports a reset, not an
    end of file): not the file's fault either, so the probe runs again in a new child."""
    stopped = pipeline._start_probe_child()
    os.kill(stopped[0].pid or 0, signal.SIGSTOP)  # it will not read what it is sent
    handed_out = _hand_out_first((stopped[0], _KillAfterSend(stopped)), monkeypatch)  # type: ignore[arg-type]
    assert FileValidator(ValidationSettings()).validate(files["mp4"], "mp4", None).width == 160
    assert len(handed_out) == 2


def test_the_warm_up_clips_are_videos_the_probe_accepts(tmp_path: Path) -> None:
    probe_module.make_warm_up_samples(str(tmp_path))
    written = sorted(tmp_path.iterdir())
    assert [path.name for path in written] == ["warm-up.mkv", "warm-up.mp4"]
    for path in written:
        result = probe_module.probe(str(path), 64, 64, 60.0)
        assert "error" not in result and (result["width"], result["codec"]) == (64, "h264"), result


def test_a_spare_probes_the_touch_clips_again_before_it_reads_its_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its server warmed up before forking it (tests/validation/test_probe_warm_up.py); the
    spare probes the clips once more, on one thread, so the upload's probe finds the pages it
    writes copied already (in-process: the probes it would run are recorded instead)."""
    calls: list[str] = []

    def probe(path: str, *limits: float, threads: int = 0) -> dict[str, object]:
        calls.append(f"touch {path} threads={threads}")
        return {}

    monkeypatch.setattr(probe_module, "probe", probe)
    monkeypatch.setattr(probe_module, "limited_probe", lambda path, limits: calls.append(f"probe {path}") or {"ok": 1})
    parent, child = multiprocessing.Pipe()
    parent.send(("upload.mp4", {}))
    probe_module.probe_on_request(child, ("a.mkv", "b.mp4"))
    assert calls == ["touch a.mkv threads=1", "touch b.mp4 threads=1", "probe upload.mp4"]
    assert parent.recv() == {"ok": 1}
