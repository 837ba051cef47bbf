"""The optional virus scan against a real clamd that this test starts with its own signature.

ClamAV's public signature database cannot be downloaded here, so the test writes an .ndb
rule matching the EICAR test string and embeds that string in a real MP4's metadata.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from tests.conftest import RunningServer, database_url_for, make_settings, running_server
from tests.helpers import UPLOAD, error_code, post_chunk, sha256
from tests.media import EICAR, make_video
from vidgate.db.models import UploadSession, utcnow
from vidgate.wiring import build_services

CLAMD = shutil.which("clamd") or "/usr/sbin/clamd"


@pytest.fixture(scope="session")
def clamd_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not Path(CLAMD).exists():
        pytest.fail("clamd is not installed: run scripts/debian-deps (Debian package clamav-daemon)")
    root = tmp_path_factory.mktemp("clamd")
    (root / "db").mkdir()
    (root / "db" / "vidgate-test.ndb").write_text(f"Vidgate.Test.EICAR:0:*:{EICAR.hex()}\n")
    socket_path = root / "clamd.sock"
    (root / "clamd.conf").write_text(
        f"LocalSocket {socket_path}\nDatabaseDirectory {root / 'db'}\nForeground yes\n"
        f"LogFile {root / 'clamd.log'}\nStreamMaxLength 700M\n"
    )
    process = subprocess.Popen(
        [CLAMD, "-c", str(root / "clamd.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while not socket_path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            log = (root / "clamd.log").read_text() if (root / "clamd.log").exists() else ""
            pytest.fail(f"clamd did not start: {log[-2000:]}")
        time.sleep(0.1)
    yield str(socket_path)
    process.terminate()
    process.wait(timeout=20)


@pytest.fixture(scope="module")
def scanning_server(
    backend: str, clamd_socket: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    data_dir = tmp_path_factory.mktemp(f"clam-{backend}")
    with database_url_for(backend, data_dir) as url:
        settings = make_settings(data_dir, url, validation={"clamd_socket": clamd_socket})
        with running_server(settings) as running:
            yield running


def test_infected_upload_is_refused_and_a_clean_one_accepted(scanning_server: RunningServer, tmp_path: Path) -> None:
    infected = make_video(tmp_path / "infected.mp4", metadata={"comment": EICAR.decode()}).read_bytes()
    clean = make_video(tmp_path / "clean.mp4", seed=5).read_bytes()
    assert EICAR in infected
    parts = scanning_server.settings.storage_dir / "parts"
    with scanning_server.client() as client:
        refused = post_chunk(client, infected, session_id=f"eicar-{uuid.uuid4().hex}")
        assert (refused.status_code, error_code(refused)) == (422, "malware_detected")
        assert "Vidgate.Test.EICAR" in refused.json()["error"]["message"]
        accepted = post_chunk(client, clean)
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["data"]["content_hash"] == sha256(clean)
    assert list(parts.glob("*.part")) == []
    assert not (scanning_server.settings.storage_dir / "blobs" / sha256(infected)[:2] / sha256(infected)).exists()


def test_scanner_down_keeps_the_upload_and_cleanup_finishes_it(backend: str, clamd_socket: str, tmp_path: Path) -> None:
    """Fail closed, lose nothing: with clamd unreachable the upload waits in `assembling`."""
    clip = make_video(tmp_path / "waiting.mp4", seed=6).read_bytes()
    session_id = f"wait-{uuid.uuid4().hex}"
    with database_url_for(backend, tmp_path) as url:
        settings = make_settings(tmp_path, url, validation={"clamd_socket": str(tmp_path / "no-such.sock")})
        with running_server(settings) as server:
            with server.client() as client:
                response = post_chunk(client, clip, session_id=session_id)
                assert (response.status_code, error_code(response)) == (503, "scanner_unavailable")
                view = client.get(f"{UPLOAD}/session/{session_id}").json()["data"]
            assert view["status"] == "assembling"
            # Later the scanner is back (another process, configured correctly, runs cleanup).
            scanner_back = settings.validation.model_copy(update={"clamd_socket": clamd_socket})
            good = settings.model_copy(update={"validation": scanner_back})
            services = build_services(good)
            with services.db.session() as session:
                session.execute(
                    update(UploadSession)
                    .where(UploadSession.session_id == session_id)
                    .values(last_updated=utcnow() - timedelta(hours=1))
                )
            report = services.cleanup.run()
            services.db.dispose()
            assert report.reassembled_sessions == 1
            with server.client() as client:
                view = client.get(f"{UPLOAD}/session/{session_id}").json()["data"]
    assert (view["status"], view["content_hash"]) == ("completed", sha256(clip))
