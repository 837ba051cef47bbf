"""The upload page in headless Chromium against a real server: the key, uploads of real videos
(picked and dropped), live processing status and results, a duplicate, refused files."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RunningServer
from tests.media import make_video, pe_executable, zip_archive

UPLOAD_TIMEOUT_MS = 60_000


@pytest.fixture
def page(browser: Any, web_server: RunningServer) -> Iterator[Any]:
    context = browser.new_context(base_url=web_server.base_url)
    page = context.new_page()
    page.errors = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda error: page.errors.append(str(error)))
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
