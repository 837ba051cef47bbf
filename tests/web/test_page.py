"""The upload page in headless Chromium against a real server: the key, uploads of real videos
(picked and dropped), live processing status and results, a duplicate, refused files."""

from __future__ import annotations

import base64
import hashlib
import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from tests.conftest import RunningServer
from tests.media import CONTAINERS, make_video, pe_executable, zip_archive
from vidgate.validation.formats import HEAD_BYTES, check_head

UPLOAD_TIMEOUT_MS = 60_000


@pytest.fixture
def page(browser: Any, web_server: RunningServer) -> Iterator[Any]:
    context = browser.new_context(base_url=web_server.base_url)
    page = context.new_page()
    page.errors = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.console_errors = []  # type: ignore[attr-defined]  # what the browser's console shows as errors
    page.on("console", lambda message: page.console_errors.append(message.text) if message.type == "error" else None)
    try:
        yield page
    finally:
        context.close()


def open_with_key(page: Any, key: str) -> None:
    page.goto("/")
    page.wait_for_selector("body[data-ready=true]")
    page.fill("#api-key", key)
    page.wait_for_selector("#api-key-status[data-state=ok]")
    page.wait_for_selector("#live-status[data-state=open]")


def item(page: Any, filename: str, nth: int = 0) -> Any:
    return page.locator(f'#uploads li[data-filename="{filename}"]').nth(nth)


def wait_state(page: Any, filename: str, state: str, nth: int = 0) -> Any:
    locator = item(page, filename, nth)
    locator.and_(page.locator(f'[data-state="{state}"]')).wait_for(timeout=UPLOAD_TIMEOUT_MS)
    return locator


def drop_files(page: Any, files: list[Path], mime: str = "video/mp4") -> None:
    """A real drop event on the zone, carrying File objects made in the page."""
    payload = [{"name": f.name, "data": base64.b64encode(f.read_bytes()).decode(), "type": mime} for f in files]
    page.evaluate(
        """(files) => {
            const transfer = new DataTransfer()
            for (const f of files) {
                const bytes = Uint8Array.from(atob(f.data), (c) => c.charCodeAt(0))
                transfer.items.add(new File([bytes], f.name, { type: f.type }))
            }
            const zone = document.querySelector('#dropzone')
            zone.dispatchEvent(new DragEvent('dragenter', { dataTransfer: transfer, bubbles: true, cancelable: true }))
            zone.dispatchEvent(new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true }))
        }""",
        payload,
    )


def shown(locator: Any, field: str) -> str:
    return str(locator.locator(f'[data-field="{field}"]').inner_text())


def test_the_key_is_checked_and_remembered(page: Any, web_server: RunningServer) -> None:
    page.goto("/")
    page.wait_for_selector("body[data-ready=true]")
    assert page.get_attribute("#api-key-status", "data-state") == "missing"
    page.fill("#api-key", "vg_not_a_key")
    page.wait_for_selector("#api-key-status[data-state=refused]")
    assert "refused" in page.inner_text("#api-key-status")
    key = web_server.key_for("alice")
    open_with_key(page, key)
    page.reload()
    page.wait_for_selector("#api-key-status[data-state=ok]")
    assert page.input_value("#api-key") == key
    assert page.get_attribute("#api-key", "type") == "password"
    page.click("#toggle-key")
    assert page.get_attribute("#api-key", "type") == "text"
    assert page.errors == []


def test_two_videos_upload_process_and_show_their_results(page: Any, web_server: RunningServer, tmp_path: Path) -> None:
    seed = uuid.uuid4().int % 100_000
    first = make_video(tmp_path / f"first-{seed}.mp4", seed=seed)
    second = make_video(tmp_path / f"second-{seed}.mkv", "mkv", frames=40, width=192, height=108, seed=seed + 1)
    open_with_key(page, web_server.key_for("alice"))
    page.click("#upload-options summary")
    page.fill("#chunk-size", "0.125")  # 128 KiB: several PATCH requests per file
    page.dispatch_event("#chunk-size", "change")
    page.set_input_files("#file-input", str(first))
    drop_files(page, [second], mime="video/x-matroska")

    done_first = wait_state(page, first.name, "done")
    done_second = wait_state(page, second.name, "done")
    assert shown(done_first, "resolution") == "160\N{MULTIPLICATION SIGN}120"
    assert shown(done_second, "resolution") == "192\N{MULTIPLICATION SIGN}108"
    assert shown(done_first, "video_codec") == "h264"
    assert shown(done_first, "duration") == "2.00 s"
    assert shown(done_second, "duration") == "1.60 s"
    assert done_first.locator(".upload-progress").evaluate("bar => bar.value") == 1
    assert done_first.get_attribute("data-duplicate") == "false"
    assert done_first.locator(".duplicate-notice").is_hidden()

    with web_server.client("alice") as client:
        for done, path in ((done_first, first), (done_second, second)):
            video_id = done.get_attribute("data-video-id")
            session_id = done.get_attribute("data-session-id")
            result = client.get(f"/v1/videos/{video_id}/result").json()["data"]
            assert shown(done, "fingerprint") == result["fingerprint"]
            assert shown(done, "content_hash") == result["content_hash"]
            session = client.get(f"/v1/upload/video/session/{session_id}").json()["data"]
            assert session["video_id"] == video_id
            assert session["filename"] == path.name
            # The collapsible JSON holds the whole result.
            done.locator(".result-details summary").click()
            assert '"fingerprint"' in done.locator(".result-json").inner_text()
    assert page.errors == []


def test_a_second_upload_of_the_same_video_shows_the_cached_result(
    page: Any, web_server: RunningServer, tmp_path: Path
) -> None:
    video = make_video(tmp_path / f"twice-{uuid.uuid4().hex[:8]}.mp4", seed=uuid.uuid4().int % 100_000)
    open_with_key(page, web_server.key_for("alice"))
    page.set_input_files("#file-input", str(video))
    original = wait_state(page, video.name, "done")
    page.set_input_files("#file-input", str(video))
    again = wait_state(page, video.name, "done", nth=1)
    assert again.get_attribute("data-duplicate") == "true"
    assert again.locator(".duplicate-notice").is_visible()
    assert "Already uploaded: cached result" in again.inner_text()
    assert again.get_attribute("data-video-id") == original.get_attribute("data-video-id")
    assert again.get_attribute("data-session-id") != original.get_attribute("data-session-id")
    assert shown(again, "fingerprint") == shown(original, "fingerprint")
    assert page.errors == []


def test_refused_files_show_the_servers_code_and_message(page: Any, web_server: RunningServer, tmp_path: Path) -> None:
    exe = tmp_path / "setup.exe"
    exe.write_bytes(pe_executable())
    fake = tmp_path / "holiday.mp4"
    fake.write_bytes(zip_archive())
    open_with_key(page, web_server.key_for("alice"))
    page.set_input_files("#file-input", [str(exe), str(fake)])
    refused_exe = wait_state(page, exe.name, "error")
    refused_fake = wait_state(page, fake.name, "error")
    for refused in (refused_exe, refused_fake):
        code = refused.get_attribute("data-error-code")
        assert code
        error = refused.locator(".error")
        assert error.is_visible()
        assert shown(refused, "error-code") == code
        assert shown(refused, "error-message")
        assert refused.locator(".result").is_hidden()
    assert refused_exe.get_attribute("data-error-code") in {"extension_blocked", "extension_not_allowed"}
    assert refused_fake.get_attribute("data-error-code") in {"dangerous_content", "unrecognized_format"}
    assert page.errors == []


def colour(hex_colour: str) -> tuple[int, int, int]:
    value = hex_colour.strip().lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def page_colour(page: Any, name: str) -> tuple[int, int, int]:
    """One of the page's colours (``--bad``, ``--accent``...), as the stylesheet defines it."""
    return colour(page.evaluate(f"getComputedStyle(document.documentElement).getPropertyValue('{name}')"))


def painted_colour(locator: Any, at: float = 0.5) -> tuple[int, int, int]:
    """The colour the browser painted at ``at`` of the element's width, halfway down: from a
    screenshot of it (decoded with PyAV's PNG decoder)."""
    with av.open(io.BytesIO(locator.screenshot()), format="png_pipe") as png:
        pixels = next(png.decode(video=0)).to_ndarray(format="rgb24")
    height, width, _ = pixels.shape
    red, green, blue = (int(v) for v in pixels[height // 2, min(width - 1, int(width * at))])
    return red, green, blue


def text_colour(locator: Any) -> tuple[int, int, int]:
    red, green, blue = locator.evaluate("e => getComputedStyle(e).color.match(/\\d+/g).map(Number)")[:3]
    return red, green, blue


def near(a: tuple[int, int, int], b: tuple[int, int, int]) -> bool:
    return all(abs(x - y) <= 12 for x, y in zip(a, b, strict=True))


def test_a_refused_upload_shows_as_refused_not_as_an_upload_at_100_percent(
    page: Any, web_server: RunningServer, tmp_path: Path
) -> None:
    """Issue 13: a refused file's bar stood at 100 % in the colour of an upload under way. Now
    the whole entry says Refused (badge, heading, bar label) and the bar is painted in the
    refusal colour, with the server's code and message beside it."""
    fake = tmp_path / f"holiday-{uuid.uuid4().hex[:6]}.mkv"
    fake.write_bytes(make_video(tmp_path / "inside.mp4", seed=uuid.uuid4().int % 100_000).read_bytes())
    open_with_key(page, web_server.key_for("alice"))
    page.set_input_files("#file-input", str(fake))
    refused = wait_state(page, fake.name, "error")
    assert refused.get_attribute("data-outcome") == "refused"
    assert refused.get_attribute("data-error-code") == "format_mismatch"
    assert shown(refused, "state") == "Refused"
    assert shown(refused, "error-outcome") == "Refused"
    assert refused.locator(".error strong").inner_text() == "Refused (HTTP 415)"
    assert shown(refused, "error-message") == "The file is MP4 (ISO BMFF), but its name ends in .mkv."
    bar = refused.locator(".upload-progress")
    assert bar.get_attribute("aria-valuetext") == "Refused"
    assert bar.evaluate("bar => bar.value") == 1
    bad, accent = page_colour(page, "--bad"), page_colour(page, "--accent")
    for at in (0.1, 0.5, 0.9):  # the whole bar, not the part sent so far
        painted = painted_colour(bar, at)
        assert near(painted, bad), (at, painted, bad)
        assert not near(painted, accent)
    assert text_colour(refused.locator(".error strong")) == bad
    assert refused.locator(".numbers").is_hidden()
    assert page.errors == []


def test_one_word_for_one_kind_of_error(page: Any, web_server: RunningServer, tmp_path: Path) -> None:
    """The word comes from the server's code: content refusals (of any code, from the HTTP
    answer or from the /ws event, whichever comes first) say Refused everywhere; an upload the
    network broke says Failed everywhere, in its own colour."""
    exe = tmp_path / "setup.exe"
    exe.write_bytes(pe_executable())
    fake = tmp_path / f"fake-{uuid.uuid4().hex[:6]}.mp4"
    fake.write_bytes(zip_archive())
    cut = tmp_path / f"cut-{uuid.uuid4().hex[:6]}.mp4"
    cut.write_bytes(make_video(tmp_path / "whole.mp4", seed=uuid.uuid4().int % 100_000).read_bytes()[:5000])
    open_with_key(page, web_server.key_for("alice"))
    page.set_input_files("#file-input", [str(exe), str(fake), str(cut)])
    for name in (exe.name, fake.name, cut.name):
        refused = wait_state(page, name, "error")
        words = {shown(refused, "state"), shown(refused, "error-outcome"), refused.get_attribute("data-outcome")}
        assert words == {"Refused", "refused"}, (name, words, refused.get_attribute("data-error-code"))
        assert refused.locator(".upload-progress").get_attribute("aria-valuetext") == "Refused"

    # The network goes away: tus-js-client gives up at once when the browser knows it is offline.
    offline = make_video(tmp_path / f"offline-{uuid.uuid4().hex[:6]}.mp4", seed=uuid.uuid4().int % 100_000)
    page.context.set_offline(True)
    page.set_input_files("#file-input", str(offline))
    failed = wait_state(page, offline.name, "error")
    page.context.set_offline(False)
    assert failed.get_attribute("data-error-code") == "network_error"
    assert failed.get_attribute("data-outcome") == "failed"
    assert shown(failed, "state") == "Failed"
    assert failed.locator(".error strong").inner_text() == "Failed"
    assert failed.locator(".upload-progress").get_attribute("aria-valuetext") == "Failed at 0.0 %"
    assert text_colour(failed.locator(".error strong")) == page_colour(page, "--warn")
    assert near(painted_colour(failed.locator(".upload-progress"), 0.5), page_colour(page, "--border"))  # nothing sent
    assert page.errors == []


def test_checking_a_key_and_uploading_leave_the_console_clean(
    page: Any, web_server: RunningServer, tmp_path: Path
) -> None:
    """Issue 13: the key was checked with GET /v1/videos/key-check, a 404 in the console. It is
    checked with GET /v1/me, which names the key's user; a key check and an upload through to
    its result log no error at all."""
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    open_with_key(page, web_server.key_for("alice"))
    video = make_video(tmp_path / f"clean-{uuid.uuid4().hex[:6]}.mp4", seed=uuid.uuid4().int % 100_000)
    page.set_input_files("#file-input", str(video))
    wait_state(page, video.name, "done")
    assert page.console_errors == []
    assert page.errors == []
    paths = [httpx.URL(url).path for url in requested]
    assert "/v1/me" in paths
    assert not [path for path in paths if "key-check" in path]
    assert page.inner_text("#api-key-status") == "Key accepted: uploads go to alice."


# What each browser puts in File.type (and tus-js-client then in the upload's `filetype`) for a
# video chosen in the page, by extension. "" is a File with no type; vidgate takes it as no claim.
#
# Chromium: net/base/mime_util.cc kPrimaryMappings (webm video/webm; mkv video/matroska, added
#   with RFC 9559; mp4,m4v video/mp4; ogv,ogm video/ogg; ogg,oga,opus audio/ogg) come first; other
#   extensions go to the platform (Linux: freedesktop shared-mime-info, e.g. Debian 12's 2.2 gives
#   video/quicktime, video/x-msvideo, video/3gpp, video/3gpp2; Windows: the registry's Content
#   Type, video/avi for .avi), then kSecondaryMappings. Tested for real below (Debian's Chromium).
# Firefox: uriloader/exthandler/nsExternalHelperAppService.cpp defaultMimeEntries first (ogv
#   video/ogg, ogg application/ogg, webm video/webm; mp4 video/mp4 on Windows), then the OS (as
#   above; .mkv video/x-matroska on Linux and where a player registered it, else nothing), then
#   extraMimeEntries (mp4 video/mp4, 3gpp,3gp video/3gpp, 3g2 video/3gpp2, ogv,ogg video/ogg).
# Safari: WebCore's MIMETypeRegistryCocoa.mm asks macOS (NSURLFileTypeMappings, the system's type
#   declarations): video/mp4, video/x-m4v (.m4v), video/quicktime, video/avi, video/3gpp,
#   video/3gpp2, video/webm, video/x-matroska for .mkv on recent macOS; macOS declares no Ogg
#   types, so .ogv/.ogg come without one. (Not run here: no Safari or Firefox on Debian.)
BROWSER_TYPES: dict[str, dict[str, set[str]]] = {
    "mkv": {
        "chromium": {"video/matroska"},
        "firefox": {"video/x-matroska", "video/matroska", ""},
        "safari": {"video/x-matroska", ""},
    },
    "webm": {"chromium": {"video/webm"}, "firefox": {"video/webm"}, "safari": {"video/webm", ""}},
    "mp4": {"chromium": {"video/mp4"}, "firefox": {"video/mp4"}, "safari": {"video/mp4"}},
    "m4v": {"chromium": {"video/mp4"}, "firefox": {"video/mp4", "video/x-m4v"}, "safari": {"video/x-m4v"}},
    "mov": {"chromium": {"video/quicktime"}, "firefox": {"video/quicktime"}, "safari": {"video/quicktime"}},
    "avi": {
        "chromium": {"video/x-msvideo", "video/avi", "video/vnd.avi"},
        "firefox": {"video/x-msvideo", "video/avi", "video/vnd.avi"},
        "safari": {"video/avi"},
    },
    "ogv": {"chromium": {"video/ogg"}, "firefox": {"video/ogg"}, "safari": {""}},
    "ogg": {"chromium": {"audio/ogg"}, "firefox": {"application/ogg"}, "safari": {""}},
    "3gp": {"chromium": {"video/3gpp"}, "firefox": {"video/3gpp"}, "safari": {"video/3gpp"}},
    "3g2": {"chromium": {"video/3gpp2"}, "firefox": {"video/3gpp2"}, "safari": {"video/3gpp2"}},
}


@pytest.mark.parametrize("extension", list(BROWSER_TYPES))
def test_what_any_browser_declares_is_accepted_for_a_real_file(tmp_path: Path, extension: str) -> None:
    container = next(name for name, (_, _, ext) in CONTAINERS.items() if ext == extension)
    head = make_video(tmp_path / f"clip.{extension}", container).read_bytes()[:HEAD_BYTES]
    for content_type in set().union(*BROWSER_TYPES[extension].values()):
        assert check_head(head, extension, content_type).name in {"mp4", "mov", "matroska", "webm", "avi", "ogg"}


def metadata_of(headers: dict[str, str]) -> dict[str, str]:
    """The tus Upload-Metadata header, decoded."""
    pairs = (item.strip().split(" ", 1) for item in headers.get("upload-metadata", "").split(",") if item.strip())
    return {key: base64.b64decode(value[0]).decode() if value else "" for key, *value in pairs}


def test_videos_chosen_in_chromium_are_accepted_with_the_type_chromium_declares(
    page: Any, web_server: RunningServer, tmp_path: Path
) -> None:
    """Real files of every supported extension, chosen through the file input: Chromium itself
    types each File (from the path), the page sends that type as tus `filetype`, and the
    server accepts the upload and records the type."""
    declared: dict[str, str] = {}

    def note_type(request: Any) -> None:
        if request.method == "POST" and "/v1/tus" in request.url:
            sent = metadata_of(request.headers)
            declared[sent["filename"]] = sent.get("filetype", "")

    page.on("request", note_type)
    files = []
    for extension in BROWSER_TYPES:
        container = next(name for name, (_, _, ext) in CONTAINERS.items() if ext == extension)
        seed = uuid.uuid4().int % 100_000
        files.append(make_video(tmp_path / f"chosen-{seed}.{extension}", container, seed=seed))
    open_with_key(page, web_server.key_for("alice"))
    page.set_input_files("#file-input", [str(path) for path in files])
    for path in files:
        accepted = item(page, path.name).and_(page.locator("[data-video-id]"))
        accepted.wait_for(timeout=UPLOAD_TIMEOUT_MS)
        extension = path.suffix[1:]
        assert declared[path.name] in BROWSER_TYPES[extension]["chromium"], (path.name, declared[path.name])
        with web_server.client("alice") as client:
            video = client.get(f"/v1/videos/{accepted.get_attribute('data-video-id')}").json()["data"]
        assert video["content_type"] == declared[path.name]
    assert declared[next(p.name for p in files if p.suffix == ".mkv")] == "video/matroska"  # the type of issue 13
    assert page.errors == []


def test_the_page_is_served_from_the_package(web_server: RunningServer) -> None:
    with httpx.Client(base_url=web_server.base_url) as client:
        index = client.get("/")
        assert index.status_code == 200
        assert index.headers["content-type"].startswith("text/html")
        assert '<script src="app.js" defer>' in index.text
        script = client.get("/app.js")
        assert script.status_code == 200
        assert "javascript" in script.headers["content-type"]
        assert "tus-js-client" in script.text  # bundled, nothing from a CDN
        assert script.headers["cache-control"] == "no-cache"
        assert client.get("/app.js", headers={"If-None-Match": script.headers["etag"]}).status_code == 304
        assert client.get("/style.css").status_code == 200
        assert client.get("/health").status_code == 200  # API routes keep precedence


def throttle_uploads(page: Any, bytes_per_second: int) -> None:
    """Slow the browser's uploads down (Chromium's network emulation) so there is time to act."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": bytes_per_second},
    )


def wait_sent(locator: Any, at_least: int) -> int:
    locator.page.wait_for_function(
        "([li, n]) => Number(li.dataset.bytesSent) >= n", arg=[locator.element_handle(), at_least], timeout=20_000
    )
    return int(locator.get_attribute("data-bytes-sent"))


def server_offset(server: RunningServer, session_id: str) -> int:
    with server.client("alice") as client:
        head = client.head(f"/v1/tus/{session_id}", headers={"Tus-Resumable": "1.0.0"})
    assert head.status_code == 200, head.status_code
    return int(head.headers["Upload-Offset"])


def test_uploads_pause_resume_and_survive_a_reload(page: Any, web_server: RunningServer, tmp_path: Path) -> None:
    seed = uuid.uuid4().int % 100_000
    video = make_video(tmp_path / f"slow-{seed}.mp4", seed=seed)
    size = video.stat().st_size
    open_with_key(page, web_server.key_for("alice"))
    page.click("#upload-options summary")
    page.fill("#chunk-size", "0.0625")  # 64 KiB PATCHes
    page.dispatch_event("#chunk-size", "change")
    throttle_uploads(page, 256 * 1024)
    patches: list[dict[str, str]] = []
    page.on("request", lambda r: patches.append(r.headers) if r.method == "PATCH" else None)

    page.set_input_files("#file-input", str(video))
    upload = item(page, video.name)
    wait_sent(upload, size // 5)
    assert shown(upload, "speed").endswith("/s")
    upload.locator("button.pause").click()
    upload.and_(page.locator('[data-state="paused"]')).wait_for()
    session_id = upload.get_attribute("data-session-id")
    page.wait_for_timeout(300)
    paused_at = server_offset(web_server, session_id)
    page.wait_for_timeout(500)
    assert server_offset(web_server, session_id) == paused_at < size
    assert upload.locator("button.pause").inner_text() == "Resume"
    upload.locator("button.pause").click()
    wait_sent(upload, size // 2)

    # A reload stops the upload; the same file chosen again carries on from the server's offset.
    page.reload()
    page.wait_for_selector("#live-status[data-state=open]")
    offset = server_offset(web_server, session_id)
    assert 0 < offset < size and offset >= paused_at  # what the server acknowledged; the chunk in flight is lost
    throttle_uploads(page, 256 * 1024)
    patches.clear()
    page.set_input_files("#file-input", str(video))
    resumed = wait_state(page, video.name, "done")
    assert resumed.get_attribute("data-session-id") == session_id
    assert resumed.get_attribute("data-duplicate") == "false"
    assert int(patches[0]["upload-offset"]) == offset
    assert all(p["upload-checksum"].startswith("sha256 ") and p["x-api-key"] for p in patches)
    with web_server.client("alice") as client:
        session = client.get(f"/v1/upload/video/session/{session_id}").json()["data"]
    assert session["content_hash"] == hashlib.sha256(video.read_bytes()).hexdigest()
    assert session["status"] == "completed"
    assert page.errors == []
