"""Settings: the seed's names and defaults, and clear failures for bad or unknown values."""

from __future__ import annotations

import pytest

from vidgate.config import SettingsError, all_env_names, load_settings

SEED_DEFAULTS = {
    "UPLOAD_MAX_FILE_SIZE": 524288000,
    "UPLOAD_MAX_CHUNK_SIZE": 10485760,
    "UPLOAD_MAX_CHUNKS": 100,
    "UPLOAD_SESSION_TIMEOUT_HOURS": 24,
    "ENABLE_DEDUPLICATION": True,
    "DEFAULT_PROCESSING_PRIORITY": 5,
    "PROCESSING_MAX_CONCURRENT_JOBS": 5,
    "DEFAULT_MODEL_TYPE": "resnet50",
    "WEBSOCKET_ENABLED": True,
    "WEBSOCKET_HEARTBEAT_INTERVAL": 30,
    "CELERY_BROKER_URL": "redis://localhost:6379/0",
    "CELERY_RESULT_BACKEND": "redis://localhost:6379/0",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in all_env_names():
        monkeypatch.delenv(name, raising=False)


def test_seed_names_and_defaults() -> None:
    settings = load_settings()
    names = all_env_names()
    for env, expected in SEED_DEFAULTS.items():
        group, field = names[env]
        assert getattr(getattr(settings, group), field) == expected, env


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPLOAD_MAX_FILE_SIZE", "1GiB")
    monkeypatch.setenv("ENABLE_DEDUPLICATION", "false")
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/vidgate")
    settings = load_settings()
    assert settings.upload.max_file_size == 1 << 30
    assert settings.upload.enable_deduplication is False
    assert settings.database_backend == "postgresql"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("UPLOAD_MAX_FILE_SIZE", "lots", "invalid setting UPLOAD_MAX_FILE_SIZE='lots'"),
        ("UPLOAD_MAX_CHUNKS", "0", "invalid setting UPLOAD_MAX_CHUNKS"),
        ("WEBSOCKET_ENABLED", "maybe", "invalid setting WEBSOCKET_ENABLED"),
        ("DEFAULT_PROCESSING_PRIORITY", "42", "DEFAULT_PROCESSING_PRIORITY must lie between"),
        ("UPLOAD_MAX_CHUNK_SIZE", "2GiB", "UPLOAD_MAX_CHUNK_SIZE must not exceed UPLOAD_MAX_FILE_SIZE"),
        ("UPLOAD_MAX_FILESIZE", "1", "unknown setting UPLOAD_MAX_FILESIZE (did you mean UPLOAD_MAX_FILE_SIZE?)"),
        ("WEBSOCKET_HEARTBEAT", "5", "unknown setting WEBSOCKET_HEARTBEAT"),
    ],
)
def test_bad_settings_fail_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert expected in str(error.value)


def test_file_locks_are_refused_with_uploads_in_progress_in_the_bucket(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file lock holds on one host; uploads in progress in the bucket are written by any host."""
    monkeypatch.setenv("STORAGE_BACKEND", "s3")
    monkeypatch.setenv("STORAGE_S3_BUCKET", "videos")
    assert load_settings().upload_locks == "redis"  # auto: redis, the lock every host sees
    monkeypatch.setenv("UPLOAD_LOCKS", "file")
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert "UPLOAD_LOCKS=file" in str(error.value) and "STORAGE_PARTS=backend" in str(error.value)
    monkeypatch.setenv("STORAGE_PARTS", "local")  # parts on this host: file locks are what it needs
    assert load_settings().upload_locks == "file"
    monkeypatch.setenv("STORAGE_BACKEND", "local")
    monkeypatch.setenv("STORAGE_PARTS", "backend")
    assert load_settings().upload_locks == "file"
