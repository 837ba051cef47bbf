"""The content route's short way past the app's stack, over a real server: which requests take
it, that the others get the app's answers unchanged, and that both are counted alike."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RunningServer
from tests.helpers import error_code, post_chunk
from tests.media import make_video
from vidgate.metrics import HttpMetricsMiddleware


@pytest.fixture
def through_the_stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The method and path of every request that went through the app's middlewares."""
    seen: list[str] = []
    real = HttpMetricsMiddleware.__call__

    async def recording(self: HttpMetricsMiddleware, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append(f"{scope['method']} {scope['path']}")
        await real(self, scope, receive, send)

    monkeypatch.setattr(HttpMetricsMiddleware, "__call__", recording)
    yield seen


def counted(client: httpx.Client, status: int) -> float:
    """vidgate_http_requests_total of the content route's GETs with ``status``."""
    text = client.get("/metrics").text
    labels = f'method="GET",route="/v1/videos/{{video_id}}/content",status="{status}"'
    pattern = r"vidgate_http_requests_total\{" + re.escape(labels) + r"\} (\S+)"
    found = re.search(pattern, text)
    return float(found[1]) if found else 0.0


def test_plain_gets_skip_the_stack_and_the_rest_get_the_apps_answers(
    server: RunningServer, tmp_path: Path, through_the_stack: list[str]
) -> None:
    path = make_video(tmp_path / "short.mp4", frames=10, seed=uuid.uuid4().int % 100_000)
    data = path.read_bytes()
    with server.client() as alice:
        answer = post_chunk(alice, data, filename=path.name, content_type="")
        assert answer.status_code == 200, answer.text
        video_id = answer.json()["data"]["video_id"]
        url = f"/v1/videos/{video_id}/content"
        before = counted(alice, 206), counted(alice, 404)
        through_the_stack.clear()

        ranged = alice.get(url, headers={"Range": "bytes=5-104"})
        whole = alice.get(url)
        assert (ranged.status_code, ranged.content) == (206, data[5:105])
        assert (whole.status_code, whole.content) == (200, data)
        assert ranged.headers["etag"] == whole.headers["etag"] and ranged.headers["accept-ranges"] == "bytes"
        assert through_the_stack == []  # answered by the shortcut

        cross_origin = alice.get(url, headers={"Range": "bytes=0-9", "Origin": "https://desk.example"})
        assert cross_origin.status_code == 206 and cross_origin.content == data[:10]
        assert cross_origin.headers["access-control-allow-origin"] == "*"  # CORS ran: the app answered
        head = alice.head(url)
        assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
        unknown = alice.get("/v1/videos/no-such-video/content")
        assert (unknown.status_code, error_code(unknown)) == (404, "video_not_found")
        past_end = alice.get(url, headers={"Range": f"bytes={len(data) + 10}-"})
        assert (past_end.status_code, error_code(past_end)) == (416, "range_not_satisfiable")
        with httpx.Client(base_url=server.base_url, timeout=30) as stranger:
            nobody = stranger.get(url)
        assert (nobody.status_code, error_code(nobody)) == (401, "unauthenticated")
        assert nobody.headers["www-authenticate"] == "Bearer"
        assert through_the_stack == [
            f"GET {url}",
            f"HEAD {url}",
            "GET /v1/videos/no-such-video/content",
            f"GET {url}",
            f"GET {url}",
        ]
        # both ways are counted under the route's template
        assert counted(alice, 206) == before[0] + 2
        assert counted(alice, 404) == before[1] + 1
