"""Every setting of vidgate, in one place.

Settings come from environment variables (and an optional ``.env`` file). The seed's
variable names are kept as they are (``UPLOAD_MAX_FILE_SIZE``, ``ENABLE_DEDUPLICATION``,
``CELERY_BROKER_URL`` ...). Each group is its own ``BaseSettings`` with an env prefix;
:func:`load_settings` builds them all and turns any invalid value, or any unknown
variable carrying one of our prefixes (a typo such as ``UPLOAD_MAX_FILESIZE``), into one
:class:`SettingsError` with a message naming the variable.
"""

from __future__ import annotations

import difflib
import os
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ByteSize, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_FILE = ".env"


def _config(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(
        env_prefix=prefix,
        env_file=ENV_FILE,
        extra="ignore",
        populate_by_name=True,
        case_sensitive=False,
    )


class UploadSettings(BaseSettings):
    """Limits and lifetime of upload sessions (seed: UploadSettings)."""

    model_config = _config("UPLOAD_")

    max_file_size: ByteSize = Field(
        ByteSize(500 * 1024 * 1024), gt=0, description="Largest accepted file (bytes, or e.g. 500MiB)."
    )
    max_chunk_size: ByteSize = Field(ByteSize(10 * 1024 * 1024), gt=0, description="Largest accepted chunk body.")
    max_chunks: int = Field(100, ge=1, description="Most chunks one session may announce.")
    session_timeout_hours: float = Field(
        24.0, gt=0, description="A session expires this long after its last chunk (the value in force decides)."
    )
    max_filename_length: int = Field(255, ge=1, le=1024, description="Longest accepted file name (characters).")
    cleanup_interval_seconds: float = Field(
        600.0, gt=0, description="How often `vidgate serve` sweeps expired sessions and orphan part files."
    )
    assembly_stall_seconds: float = Field(
        600.0,
        gt=0,
        description="A session stuck in `assembling` this long (a crashed process) is assembled again by cleanup.",
    )
    fsync: bool = Field(
        False, description="fdatasync each chunk before acknowledging it (survives power loss, costs speed)."
    )
    enable_deduplication: bool = Field(
        True,
        validation_alias=AliasChoices("ENABLE_DEDUPLICATION", "enable_deduplication"),
        description="Answer an identical file from the stored copy instead of storing it again.",
    )
    dedup_scope: Literal["owner", "global"] = Field(
        "owner",
        validation_alias=AliasChoices("UPLOAD_DEDUP_SCOPE", "DEDUP_SCOPE", "dedup_scope"),
        description="Who an upload of known bytes is told about it: owner (only an owner's own earlier "
        "upload makes it a duplicate; reuse across owners is invisible) or global (any earlier upload "
        "does, answered at once from the stored result).",
    )
    locks: Literal["auto", "file", "redis"] = Field(
        "auto",
        description="Upload write locks: file (flock, one host) or redis (several API hosts); "
        "auto is redis when PROCESSING_QUEUE=celery or uploads in progress are in the bucket "
        "(STORAGE_BACKEND=s3 with STORAGE_PARTS=backend), where file locks are refused.",
    )

    @model_validator(mode="after")
    def _chunk_fits_file(self) -> UploadSettings:
        if self.max_chunk_size > self.max_file_size:
            raise ValueError("UPLOAD_MAX_CHUNK_SIZE must not exceed UPLOAD_MAX_FILE_SIZE")
        return self


class ValidationSettings(BaseSettings):
    """What a file must look like to be accepted (deepened by the validation issue)."""

    model_config = _config("VALIDATION_")

    allowed_extensions: list[str] = Field(
        default_factory=lambda: ["mp4", "m4v", "mov", "3gp", "3g2", "avi", "mkv", "webm", "ogg", "ogv"],
        description="Extensions accepted (JSON list).",
    )
    blocked_extensions: list[str] = Field(
        default_factory=lambda: [
            "exe",
            "dll",
            "com",
            "scr",
            "bat",
            "cmd",
            "msi",
            "ps1",
            "vbs",
            "js",
            "jar",
            "sh",
            "php",
            "html",
            "htm",
            "svg",
            "apk",
            "app",
            "lnk",
            "zip",
        ],
        description="Extensions refused wherever they appear in a name (clip.exe.mp4 too), JSON list.",
    )
    max_duration_seconds: float = Field(6 * 3600.0, gt=0, description="Longest accepted video.")
    max_width: int = Field(7680, ge=16, description="Widest accepted frame (pixels).")
    max_height: int = Field(4320, ge=16, description="Tallest accepted frame (pixels).")
    probe_enabled: bool = Field(True, description="Probe every assembled file with PyAV (in a child process).")
    probe_timeout_seconds: float = Field(120.0, gt=0, description="Wall-clock limit of one probe.")
    probe_memory_mb: int = Field(1024, ge=64, description="Address-space limit of the probe process.")
    clamd_socket: str | None = Field(
        None, description="ClamAV daemon: a unix socket path or host:port; unset skips the virus scan."
    )
    clamd_timeout_seconds: float = Field(120.0, gt=0, description="Time limit of one ClamAV scan.")


class ProcessingSettings(BaseSettings):
    """Priorities and concurrency of the processing queue (seed: ProcessingSettings)."""

    model_config = _config("PROCESSING_")

    default_priority: int = Field(
        5,
        validation_alias=AliasChoices("DEFAULT_PROCESSING_PRIORITY", "default_priority"),
        description="Priority of an upload that names none.",
    )
    min_priority: int = Field(1, description="Lowest accepted priority.")
    max_priority: int = Field(10, description="Highest accepted priority.")
    max_concurrent_jobs: int = Field(5, ge=1, description="Most videos processed at once (per worker process).")
    queue: Literal["inline", "celery"] = Field(
        "inline", description="inline: a worker pool inside `vidgate serve`; celery: Redis + `vidgate worker`."
    )
    analysis: Literal["child", "in_process"] = Field(
        "child",
        description="With the inline queue, where `vidgate serve` analyses videos: in one analysis child process "
        "(the API process then never loads the decoder, NumPy or the models: ~250 MiB) or in its own threads. "
        "Celery workers always analyse in their pool processes.",
    )
    analysis_memory_mb: int = Field(
        0, ge=0, description="Address-space limit of the analysis child process in MiB (0: none)."
    )
    analysis_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="Added to the analysis child's CPU niceness: uploads and live events come first when the "
        "cores are busy (1,000 sockets: event p99 139 -> 106 ms at 19), and analysis gets every idle cycle.",
    )
    analysis_idle_seconds: float = Field(
        60.0, ge=0, description="The analysis child ends after this long without a job (0: it stays)."
    )
    model_dir: Path | None = Field(None, description="Directory of ONNX models (default: VIDGATE_DATA_DIR/models).")
    model_files: dict[str, str] = Field(
        default_factory=dict,
        description='Model type -> file name in PROCESSING_MODEL_DIR (JSON); default "<type>.onnx".',
    )
    embedding_batch_size: int = Field(16, ge=1, le=256, description="Frames per ONNX Runtime batch.")
    sample_interval_seconds: float = Field(1.0, gt=0, description="One sampled frame per this many seconds.")
    decode_threads: int = Field(0, ge=0, description="Decoder threads per job (0: FFmpeg decides).")
    max_retries: int = Field(3, ge=0, description="Retries of a job after a transient failure.")
    retry_backoff_seconds: float = Field(2.0, gt=0, description="First retry delay; doubles each retry.")
    job_timeout_seconds: float = Field(
        3600.0, gt=0, description="Longest job; the Redis visibility timeout is twice this."
    )
    dispatch_interval_seconds: float = Field(
        5.0,
        gt=0,
        description="How often the dispatcher (`vidgate serve`, and beat) offers queued videos the broker did "
        "not take (Redis down), re-queues jobs whose lease lapsed and re-sends lost hand-overs.",
    )
    dispatch_timeout_seconds: float = Field(
        300.0,
        gt=0,
        description="A video handed to the broker but not started this long after is handed over again "
        "(Redis lost it: restarted empty, flushed, failed over); set it above the longest expected queue wait.",
    )
    broker_retry_seconds: float = Field(
        0.5,
        gt=0,
        description="While the broker is unreachable, how often the API's dispatcher and each worker try it again.",
    )
    lease_seconds: float = Field(
        60.0,
        gt=0,
        description="A running job's lease: a job whose worker stopped renewing it this long (the worker died "
        "whole, or its process was frozen) is queued again.",
    )
    lease_renew_seconds: float = Field(10.0, gt=0, description="How often a worker renews the lease of its job.")
    similarity_scope: Literal["owner", "shared"] = Field(
        "owner", description="Near-duplicates among the caller's own videos, or in one shared library."
    )
    similarity_max_distance: int = Field(10, ge=0, le=32, description="Hamming distance at which two frames match.")
    similarity_min_score: float = Field(
        0.5, ge=0, le=1, description="Share of matching frames (of either video) to report a video."
    )
    similarity_min_run: int = Field(
        3,
        ge=0,
        description="Also report a video when this many consecutive sampled frames match its frames in the same "
        "order (a short clip inside a longer video); 0 turns it off.",
    )
    similarity_embedding_min_cosine: float = Field(
        0.96,
        ge=0,
        le=1,
        description="Second stage (the shipped open_nsfw embeddings): report a video whose embedding is this close "
        "(crops); 1 disables it.",
    )
    similarity_embedding_max_videos: int = Field(
        5000, ge=0, description="The second stage compares with at most this many of the newest videos."
    )
    default_model_type: str = Field(
        "resnet50",
        validation_alias=AliasChoices("DEFAULT_MODEL_TYPE", "default_model_type"),
        description="Embedding model used when an upload names none.",
    )

    @model_validator(mode="after")
    def _priority_range(self) -> ProcessingSettings:
        if not self.min_priority <= self.default_priority <= self.max_priority:
            raise ValueError(
                "DEFAULT_PROCESSING_PRIORITY must lie between PROCESSING_MIN_PRIORITY and PROCESSING_MAX_PRIORITY"
            )
        return self

    @model_validator(mode="after")
    def _renew_within_lease(self) -> ProcessingSettings:
        if self.lease_renew_seconds * 2 > self.lease_seconds:
            raise ValueError(
                "PROCESSING_LEASE_RENEW_SECONDS must be at most half of PROCESSING_LEASE_SECONDS "
                "(a lease must survive one missed renewal)"
            )
        return self


class ModerationSettings(BaseSettings):
    """Moderation signals: the shipped classifier, vPDQ hashes and hash-bank matching."""

    model_config = _config("MODERATION_")

    enabled: bool = Field(True, description="Run the explicit-content classifier and give a flagged verdict.")
    nsfw_threshold: float = Field(
        0.8, ge=0, le=1, description="A sampled frame scoring at least this (open_nsfw, 0-1) counts as explicit."
    )
    nsfw_min_frames: int = Field(1, ge=1, description="Explicit frames needed to flag a video.")
    vpdq_enabled: bool = Field(True, description="Compute vPDQ hashes (needed for hash-bank matching).")
    vpdq_seconds_per_hash: float = Field(
        1.0, ge=0, description="One vPDQ frame hash per this many seconds (0: every frame), as the reference's option."
    )
    match_distance: int = Field(31, ge=0, le=256, description="Hamming distance at which two PDQ frame hashes match.")
    match_quality: int = Field(50, ge=0, le=100, description="Frames of lower PDQ quality are ignored when matching.")
    match_percent: float = Field(
        80.0, ge=0, le=100, description="A bank entry matches when this share (%) of either video's frames match."
    )
    bank_index_max_hashes: int = Field(
        2_000_000,
        ge=0,
        description="Bank frames each process keeps in memory to match against (about 110 MB per million); "
        "larger banks are searched in SQL (exact too, slower).",
    )
    rematch_batch: int = Field(
        200, ge=1, description="Stored videos re-matched against a newly imported bank per dispatcher round."
    )


class WebSocketSettings(BaseSettings):
    model_config = _config("WEBSOCKET_")

    enabled: bool = Field(True, description="Serve live events on /ws.")
    heartbeat_interval: float = Field(30.0, gt=0, description="Seconds between heartbeat events.")
    bus: Literal["auto", "local", "redis"] = Field(
        "auto",
        description="Event bus: local (one process), redis (pub/sub between processes); auto follows PROCESSING_QUEUE.",
    )
    redis_url: str | None = Field(None, description="Redis of the event bus (default: CELERY_BROKER_URL).")
    queue_size: int = Field(
        256, ge=1, description="Events buffered per client; a client further behind is closed (4008)."
    )
    event_retention_seconds: float = Field(
        86400.0, gt=0, description="How long stored events can be replayed with since (older ones are swept)."
    )
    catch_up_interval_seconds: float = Field(
        2.0, gt=0, description="How often each API process checks the event store for events its sockets missed."
    )
    progress_interval_seconds: float = Field(
        0.5, ge=0, description="At most one upload_progress / processing_progress per subject per this interval."
    )
    reorder_grace_seconds: float = Field(
        0.25,
        ge=0,
        description=(
            "An event that overtook an earlier one of its user waits this long for it on the bus "
            "before the socket reads the missing ones from the event store."
        ),
    )
    compression: bool = Field(
        False,
        description=(
            "Offer permessage-deflate on /ws. Off: each socket compresses every event on its own "
            "(72% of the event loop with 200 clients), while events are small JSON."
        ),
    )


class WebhookSettings(BaseSettings):
    """Signed HTTP callbacks for servers that cannot hold a socket."""

    model_config = _config("WEBHOOK_")

    event_types: list[str] = Field(
        default_factory=lambda: [
            "processing_completed",
            "processing_failed",
            "duplicate_detected",
            "video_reviewed",
            "hash_match",
            "video_deleted",
        ],
        description="Events sent to a user's webhook URL (JSON list).",
    )
    max_attempts: int = Field(8, ge=1, description="Deliveries tried before one is given up.")
    retry_backoff_seconds: float = Field(5.0, gt=0, description="First retry delay; doubles each attempt.")
    timeout_seconds: float = Field(10.0, gt=0, description="Time limit of one delivery.")
    poll_interval_seconds: float = Field(1.0, gt=0, description="How often due deliveries are sent.")


class MetricsSettings(BaseSettings):
    """Who may read the Prometheus metrics, and where a worker serves them."""

    model_config = _config("METRICS_")

    token: SecretStr | None = Field(
        None,
        description="Bearer token `/metrics` (and `vidgate worker --metrics-port`) require; unset: no key needed.",
    )
    host: str = Field("127.0.0.1", description="Address `vidgate worker --metrics-port` binds (`--metrics-host`).")


class LibrarySettings(BaseSettings):
    """Listing the library and the pictures made for it."""

    model_config = _config("LIBRARY_")

    page_size: int = Field(50, ge=1, description="Videos per GET /v1/videos page when the caller names no limit.")
    max_page_size: int = Field(200, ge=1, description="Largest limit GET /v1/videos accepts.")
    poster_width: int = Field(640, ge=16, le=3840, description="Width of poster.jpg (pixels; height keeps the aspect).")
    storyboard_tile_width: int = Field(160, ge=16, le=1280, description="Width of one storyboard tile (pixels).")
    storyboard_columns: int = Field(10, ge=1, le=100, description="Tiles per row of storyboard.jpg.")
    storyboard_max_tiles: int = Field(
        100, ge=1, le=1000, description="Most tiles in a storyboard; longer videos space them further apart."
    )
    jpeg_quality: int = Field(85, ge=1, le=100, description="JPEG quality of posters and storyboards (1-100).")
    review_note_max_length: int = Field(2000, ge=0, le=100_000, description="Longest note of a review decision.")
    retention_days: float | None = Field(
        None,
        gt=0,
        validation_alias=AliasChoices("RETENTION_DAYS", "LIBRARY_RETENTION_DAYS", "retention_days"),
        description="Videos older than this (days since upload) are deleted by the periodic sweep, "
        "as a DELETE would; unset: kept forever.",
    )
    url_secret: SecretStr | None = Field(
        None,
        description="Key of the HMAC that signs content, poster and storyboard URLs (for a browser "
        "<video> or <img>, which cannot send the API key); unset: a random one per process, so set it "
        "when several API processes serve one library.",
    )
    url_ttl_seconds: float = Field(
        3600.0, ge=10, le=7 * 86400, description="How long a signed URL works (it must outlast a playback)."
    )
    derived_grace_seconds: float = Field(
        3600.0,
        ge=0,
        description="The sweep removes pictures (poster, storyboard) whose content has no row only once "
        "they are this old (seconds).",
    )

    @model_validator(mode="after")
    def _page_fits(self) -> LibrarySettings:
        if self.page_size > self.max_page_size:
            raise ValueError("LIBRARY_PAGE_SIZE must not exceed LIBRARY_MAX_PAGE_SIZE")
        return self


class CelerySettings(BaseSettings):
    model_config = _config("CELERY_")

    broker_url: str = Field("redis://localhost:6379/0", description="Celery broker (distributed mode).")
    result_backend: str = Field("redis://localhost:6379/0", description="Celery result backend (distributed mode).")


class StorageSettings(BaseSettings):
    """Where bytes live. S3 credentials are never settings of ours: botocore's standard chain
    finds them (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE and the shared files,
    instance roles), and nothing logs them."""

    model_config = _config("STORAGE_")

    dir: Path | None = Field(
        None,
        description="Where part files (uploads in progress) and, with STORAGE_BACKEND=local, blobs live "
        "(default: VIDGATE_DATA_DIR/storage).",
    )
    backend: Literal["local", "s3"] = Field(
        "local", description="Stored videos and pictures on local disk (STORAGE_DIR) or in an S3-compatible bucket."
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3 endpoint, e.g. http://127.0.0.1:16280 (unset: AWS S3 of STORAGE_S3_REGION)."
    )
    s3_bucket: str | None = Field(None, description="Bucket of stored videos (needed with STORAGE_BACKEND=s3).")
    s3_region: str = Field("us-east-1", description="Region the requests are signed for.")
    s3_prefix: str = Field("", description="Key prefix inside the bucket, e.g. vidgate/ (objects: PREFIXblobs/...).")
    s3_addressing_style: Literal["auto", "path", "virtual"] = Field(
        "auto", description="path: ENDPOINT/BUCKET/KEY (most self-hosted servers); virtual: BUCKET.ENDPOINT/KEY."
    )
    s3_part_size: ByteSize = Field(
        ByteSize(16 << 20),
        ge=5 << 20,
        le=5 << 30,
        description="Part size of multipart uploads into the bucket (5 MiB-5 GiB; bigger for files over "
        "10 000 parts); at most STORAGE_S3_CONCURRENCY parts are held in memory at once.",
    )
    s3_concurrency: int = Field(4, ge=1, le=64, description="Parts of one file sent to S3 at once.")
    s3_read_buffer: ByteSize = Field(
        ByteSize(8 << 20),
        ge=64 << 10,
        le=256 << 20,
        description="Read-ahead of a file read from S3, the only copy held: processing a stored video and validating "
        "a completed upload stream one ranged GET in pieces of this size, and start another only on a seek back or "
        "further ahead than one piece.",
    )
    s3_max_attempts: int = Field(
        5, ge=1, le=20, description="Tries of one S3 request (5xx, throttling such as SlowDown, dropped connections)."
    )
    s3_timeout_seconds: float = Field(30.0, gt=0, description="Connect and read timeout of one S3 request.")
    parts: Literal["backend", "local"] = Field(
        "backend",
        description="Where uploads in progress live: backend, with the stored videos (S3 multipart uploads in the "
        "bucket with STORAGE_BACKEND=s3, so any API host takes any chunk or PATCH); local, part files under "
        "STORAGE_DIR (one API host, or hosts sharing that disk), copied into the bucket at completion.",
    )

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> StorageSettings:
        if self.backend == "s3" and not self.s3_bucket:
            raise ValueError("STORAGE_BACKEND=s3 needs STORAGE_S3_BUCKET")
        if self.s3_prefix.startswith("/"):
            raise ValueError("STORAGE_S3_PREFIX must not start with /")
        return self


class DatabaseSettings(BaseSettings):
    model_config = _config("DATABASE_")

    url: str | None = Field(None, description="SQLAlchemy URL (default: SQLite file in VIDGATE_DATA_DIR).")
    echo: bool = Field(False, description="Log every SQL statement.")


class AuthSettings(BaseSettings):
    model_config = _config("AUTH_")

    create_dev_key: bool = Field(
        True,
        description="On an embedded (SQLite) start with no API key yet, create one for user 'dev' and print it.",
    )
    cache_seconds: float = Field(
        5.0,
        ge=0,
        description="How long an API process remembers a key that authenticated (saves a database round "
        "trip per request, e.g. per tus PATCH); a key revoked meanwhile stops working within this time. "
        "0: look every key up every time.",
    )


class ServerSettings(BaseSettings):
    model_config = _config("VIDGATE_")

    data_dir: Path = Field(Path("vidgate-data"), description="Base directory of the embedded default.")
    host: str = Field("127.0.0.1", description="Address `vidgate serve` binds.")
    port: int = Field(8000, ge=0, le=65535, description="Port `vidgate serve` binds.")
    log_level: str = Field("info", description="Log level (debug, info, warning, error).")
    log_format: Literal["text", "json"] = Field(
        "text",
        validation_alias=AliasChoices("LOG_FORMAT", "log_format"),
        description="text, or json: one JSON object per line with session_id / video_id fields.",
    )
    cors_origins: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Origins allowed to call the API from a browser (JSON list). Keys travel in headers, "
        "never cookies, so * exposes nothing a page could not already send with a key.",
    )
    gc_full_interval_seconds: float = Field(
        300.0,
        ge=0,
        description="`vidgate serve` runs the garbage collector's full collections on this schedule instead of "
        "whenever the heap grew by a quarter (each stops the event loop: with 1,000 sockets open they were the "
        "tail of event latency); young collections are unchanged. 0: CPython's own rule.",
    )
    malloc_arena_max: int = Field(
        2,
        ge=0,
        description="`vidgate serve` starts itself and every process it starts (probe and analysis children) "
        "with glibc's malloc arenas capped at this many (MALLOC_ARENA_MAX): a smaller process tree under many "
        "clients. 0: glibc's own rule (8 per core). A MALLOC_ARENA_MAX in the environment wins.",
    )


class DatabaseBackend(StrEnum):
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


class Settings(BaseModel):
    """All groups together; build it with :func:`load_settings`."""

    server: ServerSettings = Field(default_factory=ServerSettings)
    upload: UploadSettings = Field(default_factory=UploadSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    processing: ProcessingSettings = Field(default_factory=ProcessingSettings)
    moderation: ModerationSettings = Field(default_factory=ModerationSettings)
    websocket: WebSocketSettings = Field(default_factory=WebSocketSettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    library: LibrarySettings = Field(default_factory=LibrarySettings)
    celery: CelerySettings = Field(default_factory=CelerySettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)

    @property
    def storage_dir(self) -> Path:
        return (self.storage.dir or self.server.data_dir / "storage").resolve()

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite:///{(self.server.data_dir / 'vidgate.db').resolve()}"

    @property
    def database_backend(self) -> DatabaseBackend:
        url = self.database_url
        return DatabaseBackend.SQLITE if url.startswith("sqlite") else DatabaseBackend.POSTGRESQL

    @property
    def event_bus(self) -> str:
        if self.websocket.bus != "auto":
            return self.websocket.bus
        return "redis" if self.processing.queue == "celery" else "local"

    @property
    def parts_in_bucket(self) -> bool:
        """Uploads in progress live in the S3 bucket, where every API host may write them."""
        return self.storage.backend == "s3" and self.storage.parts == "backend"

    @property
    def upload_locks(self) -> str:
        if self.upload.locks != "auto":
            return self.upload.locks
        return "redis" if self.processing.queue == "celery" or self.parts_in_bucket else "file"

    def conflicts(self) -> list[str]:
        """Settings that are valid alone but not together."""
        problems = []
        if self.upload.locks == "file" and self.parts_in_bucket:
            problems.append(
                "UPLOAD_LOCKS=file does not go with STORAGE_PARTS=backend on STORAGE_BACKEND=s3: uploads in "
                "progress in the bucket are written by any API host, and a file lock holds on one host only, so "
                "two hosts could write the same upload at once; set UPLOAD_LOCKS=redis (or auto), or "
                "STORAGE_PARTS=local to keep uploads in progress on this host"
            )
        return problems

    @property
    def session_timeout_seconds(self) -> float:
        return self.upload.session_timeout_hours * 3600.0

    @property
    def session_timeout(self) -> timedelta:
        """A session expires this long after its last activity (``last_updated``), by the setting
        in force when that is checked, not the one in force when the session was last written."""
        return timedelta(seconds=self.session_timeout_seconds)


class SettingsError(Exception):
    """Raised at start-up when a setting is invalid or unknown."""


_GROUPS: dict[str, type[BaseSettings]] = {
    "server": ServerSettings,
    "upload": UploadSettings,
    "validation": ValidationSettings,
    "processing": ProcessingSettings,
    "moderation": ModerationSettings,
    "websocket": WebSocketSettings,
    "webhook": WebhookSettings,
    "metrics": MetricsSettings,
    "library": LibrarySettings,
    "celery": CelerySettings,
    "storage": StorageSettings,
    "database": DatabaseSettings,
    "auth": AuthSettings,
}
# Prefixes that belong to vidgate alone: an unknown variable with one of them is a typo.
_OWNED_PREFIXES = (
    "UPLOAD_",
    "VALIDATION_",
    "PROCESSING_",
    "MODERATION_",
    "WEBSOCKET_",
    "WEBHOOK_",
    "METRICS_",
    "LIBRARY_",
    "STORAGE_",
    "AUTH_",
    "VIDGATE_",
)
# Read by the upload client (`vidgate upload`, vidgate.client), never by the server. Known here so
# a shell that exports them can still start the server; not settings, so not in all_env_names().
CLIENT_URL_ENV = "VIDGATE_URL"
CLIENT_API_KEY_ENV = "VIDGATE_API_KEY"
CLIENT_STATE_DIR_ENV = "VIDGATE_CLIENT_STATE_DIR"
CLIENT_ENV_NAMES = frozenset({CLIENT_URL_ENV, CLIENT_API_KEY_ENV, CLIENT_STATE_DIR_ENV})


def env_names(group: type[BaseSettings]) -> dict[str, str]:
    """Map each environment variable of ``group`` to its field name."""
    prefix = str(group.model_config.get("env_prefix", ""))
    names: dict[str, str] = {}
    for field_name, field in group.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            env = str(alias.choices[0])
        elif isinstance(alias, str):
            env = alias
        else:
            env = prefix + field_name
        names[env.upper()] = field_name
    return names


def all_env_names() -> dict[str, tuple[str, str]]:
    """Every environment variable vidgate reads -> (group, field)."""
    return {env: (group, field) for group, cls in _GROUPS.items() for env, field in env_names(cls).items()}


def _unknown_variables(environ: dict[str, str]) -> list[str]:
    known = all_env_names()
    problems = []
    for name in sorted(environ):
        upper = name.upper()
        if upper.startswith(_OWNED_PREFIXES) and upper not in known and upper not in CLIENT_ENV_NAMES:
            hint = difflib.get_close_matches(upper, list(known), n=1)
            suffix = f" (did you mean {hint[0]}?)" if hint else ""
            problems.append(f"unknown setting {name}{suffix}")
    return problems


def _describe(group: type[BaseSettings], error: ValidationError) -> list[str]:
    names = {field: env for env, field in env_names(group).items()}
    messages = []
    for item in error.errors():
        loc = item.get("loc") or ()
        field = str(loc[0]) if loc else ""
        env = names.get(field, field.upper() or group.__name__)
        value = item.get("input")
        shown = f"={value!r}" if isinstance(value, str | int | float) else ""
        messages.append(f"invalid setting {env}{shown}: {item['msg']}")
    return messages


def load_settings(**overrides: Any) -> Settings:
    """Read every group from the environment; raise :class:`SettingsError` on any problem.

    ``overrides`` maps a group name to a dict of field values (used by tests and the CLI).
    """
    problems = _unknown_variables(dict(os.environ))
    groups: dict[str, BaseSettings] = {}
    for name, cls in _GROUPS.items():
        try:
            groups[name] = cls(**overrides.get(name, {}))
        except ValidationError as exc:
            problems.extend(_describe(cls, exc))
    if problems:
        raise SettingsError("; ".join(problems))
    settings = Settings(**groups)
    if conflicts := settings.conflicts():
        raise SettingsError("; ".join(conflicts))
    return settings
