"""The `vidgate` command as a user runs it: real processes, real ports, real databases."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update

from tests.conftest import database_url_for, free_port, make_settings
from tests.helpers import UPLOAD, post_chunk, serve, sha256, split
from tests.processing.test_service import upload
from tests.sample_clips import clips  # noqa: F401  (fixture)
from vidgate.allocator import ENVIRONMENT
from vidgate.auth import Principal
from vidgate.cli import worker_name
from vidgate.config import all_env_names
from vidgate.db import migrate
from vidgate.db.engine import Database
from vidgate.db.models import SessionStatus, UploadSession, utcnow
from vidgate.wiring import build_services

CHUNK = 64 * 1024


def vidgate_env(data_dir: Path, database_url: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a CLI run over ``data_dir``: none of this process's vidgate settings or
    malloc arena cap (a server must start from its defaults)."""
    env = {k: v for k, v in os.environ.items() if k.upper() not in {*all_env_names(), ENVIRONMENT}}
    env["VIDGATE_DATA_DIR"] = str(data_dir)
    if database_url:
        env["DATABASE_URL"] = database_url
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vidgate", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    env = vidgate_env(tmp_path)
    created = run_cli("keys", "create", "--user", "dave", "--label", "laptop", env=env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("vg_")
    listed = run_cli("keys", "list", env=env)
    assert "dave" in listed.stdout and "laptop" in listed.stdout and "active" in listed.stdout
    assert key not in listed.stdout
    prefix = key[:10]
    revoked = run_cli("keys", "revoke", prefix, env=env)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in run_cli("keys", "list", env=env).stdout
    missing = run_cli("keys", "revoke", "vg_nothing", env=env)
    assert missing.returncode == 1
    assert "no single key" in missing.stderr
    reviewer = run_cli("keys", "create", "--user", "dave", "--role", "reviewer", env=env)
    assert reviewer.returncode == 0 and "created reviewer key" in reviewer.stderr
    assert " reviewer " in run_cli("keys", "list", env=env).stdout
    wrong = run_cli("keys", "create", "--user", "dave", "--role", "owner", env=env)
    assert wrong.returncode == 2 and "owner" in wrong.stderr


def test_banks_import_list_delete(tmp_path: Path) -> None:
    env = vidgate_env(tmp_path)
    hashes = tmp_path / "known.txt"
    hashes.write_text("0123456789abcdef" * 4 + " photo-1\n" + "f" * 64 + "\n")
    imported = run_cli("banks", "import", "known", str(hashes), env=env)
    assert imported.returncode == 0, imported.stderr
    assert "bank known: 2 entries, 2 hashes" in imported.stdout
    assert "known" in run_cli("banks", "list", env=env).stdout
    bad = tmp_path / "bad.txt"
    bad.write_text("not a hash\n")
    refused = run_cli("banks", "import", "known", str(bad), env=env)
    assert refused.returncode == 1 and "bad.txt, line 1" in refused.stderr
    assert run_cli("banks", "delete", "known", env=env).returncode == 0
    gone = run_cli("banks", "delete", "known", env=env)
    assert gone.returncode == 1 and "no bank" in gone.stderr


def test_banks_rematch_flags_stored_videos_now(tmp_path: Path, clips: dict[str, Path]) -> None:  # noqa: F811
    """A clip processed before a list naming it was imported: `vidgate banks rematch` matches it
    at once (no server running), flags its stored result and stores the owner's hash_match event;
    nothing is pending after, and --full matches again without telling anyone twice."""
    url = f"sqlite:///{tmp_path / 'vidgate.db'}"
    env = vidgate_env(tmp_path, url)
    services = build_services(make_settings(tmp_path, url))
    migrate.upgrade(services.db)
    try:
        owner = Principal(user_id="u-erin", username="erin")
        video_id = upload(services.uploads, owner, clips["carphone_distorted"].read_bytes(), "carphone.mp4").video_id
        assert video_id and services.processing.run(video_id).status == "completed"
        result = services.processing.owner_result(video_id)
        assert result is not None and result.hashes is not None and result.moderation is not None
        assert not result.moderation.flagged
        listed = [f"{f.hash},{f.quality},{f.timestamp:.3f}" for f in result.hashes.vpdq]
        (tmp_path / "list.json").write_text(json.dumps({"case-9": listed}))
        assert run_cli("banks", "import", "late", str(tmp_path / "list.json"), env=env).returncode == 0

        missing = run_cli("banks", "rematch", "nope", env=env)
        assert missing.returncode == 1 and "no bank 'nope'" in missing.stderr
        done = run_cli("banks", "rematch", "late", env=env)
        assert done.returncode == 0, done.stderr
        assert "bank late: 1 stored videos matched, 1 newly flagged" in done.stdout
        flagged = services.processing.owner_result(video_id)
        assert flagged is not None and flagged.moderation is not None and flagged.moderation.flagged
        assert [(m.bank, m.entry_name) for m in flagged.moderation.hash_matches] == [("late", "case-9")]
        told = [e for e in services.events.store.read(owner.user_id, 0) if e.event_type == "hash_match"]
        assert [e.video_id for e in told] == [video_id]

        assert "nothing to re-match" in run_cli("banks", "rematch", env=env).stdout
        again = run_cli("banks", "rematch", "--full", env=env)
        assert "bank late: 1 stored videos matched, 0 newly flagged" in again.stdout, again.stderr
        told = [e for e in services.events.store.read(owner.user_id, 0) if e.event_type == "hash_match"]
        assert len(told) == 1
    finally:
        services.close()


def test_bad_settings_stop_the_server_at_start(tmp_path: Path) -> None:
    result = run_cli("serve", env=vidgate_env(tmp_path, UPLOAD_MAX_FILESIZE="10", UPLOAD_MAX_CHUNKS="many"))
    assert result.returncode == 2
    assert "unknown setting UPLOAD_MAX_FILESIZE (did you mean UPLOAD_MAX_FILE_SIZE?)" in result.stderr
    assert "invalid setting UPLOAD_MAX_CHUNKS='many'" in result.stderr


def test_serve_refuses_file_locks_with_uploads_in_progress_in_the_bucket(tmp_path: Path) -> None:
    env = vidgate_env(tmp_path, STORAGE_BACKEND="s3", STORAGE_S3_BUCKET="videos", UPLOAD_LOCKS="file")
    result = run_cli("serve", env=env)
    assert result.returncode == 2
    assert "UPLOAD_LOCKS=file does not go with STORAGE_PARTS=backend on STORAGE_BACKEND=s3" in result.stderr


def test_embedded_default_runs_with_nothing_else(tmp_path: Path, video_file: Path) -> None:
    """What the README's first command does (scripts/serve runs the `vidgate` console script):
    SQLite + local disk, a development key printed. The script replaces itself with
    `python -m vidgate serve`, so probe children do not re-run the console script first."""
    port = free_port()
    env = {k: v for k, v in vidgate_env(tmp_path).items() if k != "VIDGATE_DATA_DIR"}
    with serve(env, port, cwd=tmp_path, command=[str(Path(sys.executable).parent / "vidgate")]) as process:
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[1:4] == [b"-m", b"vidgate", b"serve"], cmdline
        assert _environment(process.pid).get(ENVIRONMENT) == "2"  # VIDGATE_MALLOC_ARENA_MAX's default
        key = (tmp_path / "vidgate-data" / "dev-api-key").read_text().strip()
        data = video_file.read_bytes()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}) as client:
            receipt = post_chunk(client, data).json()["data"]
    assert receipt["content_hash"] == sha256(data)
    assert (tmp_path / "vidgate-data" / "vidgate.db").exists()
    blob = tmp_path / "vidgate-data" / "storage" / "blobs" / sha256(data)[:2] / sha256(data)
    assert blob.read_bytes() == data


#: shared objects that only the analysis (decoding, NumPy, ONNX Runtime) maps into a process
HEAVY_LIBRARIES = ("libavcodec", "_multiarray_umath", "onnxruntime")


def _mapped(pid: int) -> set[str]:
    return {name for name in HEAVY_LIBRARIES if name in Path(f"/proc/{pid}/maps").read_text()}


def _environment(pid: int) -> dict[str, str]:
    """The environment process ``pid`` was started with (``/proc/PID/environ``; empty for one
    that has exited: a probe child ends after each probe)."""
    try:
        entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return {}
    return dict(entry.decode().split("=", 1) for entry in entries if b"=" in entry)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_serve_analyses_in_a_child_and_the_api_process_maps_no_decoder_numerics_or_model(
    tmp_path: Path, video_file: Path
) -> None:
    port = free_port()
    env = vidgate_env(tmp_path)
    key = run_cli("keys", "create", "--user", "lean", env=env).stdout.strip()
    with serve(env, port) as process:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key}) as client:
            video_id = post_chunk(client, video_file.read_bytes()).json()["data"]["video_id"]
            deadline = time.monotonic() + 60
            while (status := client.get(f"/v1/videos/{video_id}").json()["data"]["status"]) != "completed":
                assert status != "failed" and time.monotonic() < deadline, status
                time.sleep(0.1)
            assert _mapped(process.pid) == set()
            descendants = [pid for child in _children(process.pid) for pid in (child, *_children(child))]
            assert any(_mapped(pid) == set(HEAVY_LIBRARIES) for pid in descendants)
            # `python -m vidgate serve` without the arena cap re-executed itself with it, for its children too
            assert ENVIRONMENT not in env
            environments = [found for pid in [process.pid, *descendants] if (found := _environment(pid))]
            assert len(environments) >= 3  # the API, its probe server and its analysis child at least
            assert {found.get(ENVIRONMENT) for found in environments} == {"2"}
            # the result's near-duplicate search is NumPy: imported by the first result served
            result = client.get(f"/v1/videos/{video_id}/result").json()["data"]
        assert result["moderation"]["nsfw"]["status"] == "ok"  # the model ran, in the child


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_server_killed_mid_upload_resumes_after_restart(tmp_path: Path, backend: str, video_file: Path) -> None:
    data = video_file.read_bytes()
    chunks = split(data, CHUNK)
    session_id = f"restart-{uuid.uuid4().hex}"
    with database_url_for(backend, tmp_path) as url:
        env = vidgate_env(tmp_path, url, AUTH_CREATE_DEV_KEY="false")
        assert run_cli("migrate", env=env).returncode == 0
        key = run_cli("keys", "create", "--user", "erin", env=env).stdout.strip()
        port = free_port()
        headers = {"X-API-Key": key}
        with serve(env, port) as process:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:
                for index in range(3):
                    response = post_chunk(
                        client, chunks[index], session_id=session_id, chunk_index=index, total_chunks=len(chunks)
                    )
                    assert response.status_code == 200
            process.kill()  # SIGKILL: no shutdown handler runs
            process.wait()
        with serve(env, port), httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:
            view = client.get(f"{UPLOAD}/session/{session_id}").json()["data"]
            assert view["status"] == "active"
            assert view["missing_chunks"] == list(range(3, len(chunks)))
            for index in view["missing_chunks"]:
                last = post_chunk(
                    client, chunks[index], session_id=session_id, chunk_index=index, total_chunks=len(chunks)
                )
                assert last.status_code == 200, last.text
        assert last.json()["data"]["status"] == "completed"
        assert last.json()["data"]["content_hash"] == sha256(data)


def test_serve_sweeps_expired_sessions_periodically(tmp_path: Path, video_file: Path) -> None:
    chunks = split(video_file.read_bytes(), CHUNK)
    env = vidgate_env(tmp_path, AUTH_CREATE_DEV_KEY="false", UPLOAD_CLEANUP_INTERVAL_SECONDS="0.2")
    key = run_cli("keys", "create", "--user", "frank", env=env).stdout.strip()
    port = free_port()
    db = Database(f"sqlite:///{tmp_path / 'vidgate.db'}")
    with serve(env, port), httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key}) as client:
        post_chunk(client, chunks[0], session_id="old-one", chunk_index=0, total_chunks=len(chunks))
        with db.session() as session:
            session.execute(
                update(UploadSession)
                .where(UploadSession.session_id == "old-one")
                .values(last_updated=utcnow() - timedelta(days=30))  # idle far past the timeout
            )
            upload_id = session.scalar(select(UploadSession.id).where(UploadSession.session_id == "old-one"))
        deadline = time.monotonic() + 10
        while client.get(f"{UPLOAD}/session/old-one").json()["data"]["status"] != SessionStatus.EXPIRED:
            assert time.monotonic() < deadline, "the session was not expired by the periodic cleanup"
            time.sleep(0.1)
    db.dispose()
    assert not (tmp_path / "storage" / "parts" / f"{upload_id}.part").exists()


def test_cleanup_command_prints_its_report(tmp_path: Path) -> None:
    result = run_cli("cleanup", env=vidgate_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["expired_sessions"] == 0


def test_postgresql_must_be_migrated_first(tmp_path: Path) -> None:
    with database_url_for("postgresql", tmp_path) as url:
        env = vidgate_env(tmp_path, url)
        refused = run_cli("serve", "--port", str(free_port()), env=env)
        assert refused.returncode == 1
        assert "run `vidgate migrate` first" in refused.stderr
        migrated = run_cli("migrate", env=env)
        assert migrated.returncode == 0, migrated.stderr
        assert "up to date" in migrated.stdout


def test_worker_names_are_unique_per_process_and_name_their_host() -> None:
    host = socket.gethostname()
    assert worker_name(None) == f"vidgate-{os.getpid()}@{host}"
    assert worker_name("gpu-1") == f"gpu-1@{host}"
    assert worker_name("gpu-1@rack7") == "gpu-1@rack7"
    assert worker_name("ingest-%h") == f"ingest-{host}@{host}"
