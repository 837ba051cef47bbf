"""GET /v1/videos/{id}/hashes over real HTTP: the vPDQ text equals the reference's for the
uploaded file; only the owner sees it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import vpdq

from tests.conftest import RunningServer
from tests.helpers import error_code, post_chunk, wait_for_video
from tests.sample_clips import clips  # noqa: F401  (fixture)


def test_hashes_of_an_upload(server: RunningServer, clips: dict[str, Path]) -> None:  # noqa: F811
    path = clips["carphone_distorted"]
    with server.client("alice") as alice:
        response = post_chunk(alice, path.read_bytes(), filename="clip.mp4", content_type="")
        assert response.status_code == 200, response.text
        video_id = response.json()["data"]["video_id"]
        wait_for_video(alice, video_id)
        data = alice.get(f"/v1/videos/{video_id}/hashes").json()["data"]
        text = alice.get(f"/v1/videos/{video_id}/hashes", params={"format": "vpdq"})
        bad_format = alice.get(f"/v1/videos/{video_id}/hashes", params={"format": "xml"})
    reference = sorted(vpdq.computeHash(str(path)), key=lambda f: f.frame_number)
    expected = "".join(f"{f.frame_number},{f.quality},{f.hex},{f.timestamp:.3f}\n" for f in reference)
    assert data["vpdq"] == expected and data["vpdq_frames"] == len(reference)
    assert text.headers["content-type"].startswith("text/plain") and text.text == expected
    assert data["md5"] == hashlib.md5(path.read_bytes()).hexdigest()
    assert data["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert data["poster"]["pdq"] == reference[0].hex
    assert bad_format.status_code == 400 and "format" in bad_format.text
    with server.client("bob") as bob:
        response = bob.get(f"/v1/videos/{video_id}/hashes")
        assert (response.status_code, error_code(response)) == (404, "video_not_found")
