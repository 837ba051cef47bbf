"""Resume state: one small JSON file per file being uploaded.

A run writes the file's state (its session id and chunking) before the first chunk goes out,
and removes it when the server has the whole file or has refused it. A run killed in between
leaves the state behind; the next run for the same file finds it and asks the server which
chunks are still missing. The state is keyed by server, absolute path, size and mtime, so a
file that changed in between starts afresh instead of mixing old and new bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from vidgate.config import CLIENT_STATE_DIR_ENV


class UploadState(BaseModel):
    """What a later run needs to continue an upload."""

    server: str
    path: str
    size: int
    mtime_ns: int
    session_id: str
    chunk_size: int
    total_chunks: int
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def key(self) -> str:
        return state_key(self.server, self.path, self.size, self.mtime_ns)


def state_key(server: str, path: str, size: int, mtime_ns: int) -> str:
    return hashlib.sha256(f"{server}\n{path}\n{size}\n{mtime_ns}".encode()).hexdigest()[:32]


def default_state_dir() -> Path:
    """``$VIDGATE_CLIENT_STATE_DIR``, else ``$XDG_CACHE_HOME/vidgate/uploads``, else ``~/.cache/vidgate/uploads``."""
    explicit = os.environ.get(CLIENT_STATE_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    return (Path(cache) if cache else Path.home() / ".cache") / "vidgate" / "uploads"


class StateStore:
    """The directory of state files (created on first write, readable by the owner only)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory if directory is not None else default_state_dir()

    def _file(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def load(self, server: str, path: str, size: int, mtime_ns: int) -> UploadState | None:
        file = self._file(state_key(server, path, size, mtime_ns))
        try:
            state = UploadState.model_validate_json(file.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValidationError, ValueError):
            file.unlink(missing_ok=True)  # unreadable: start afresh rather than fail
            return None
        return state if state.key == file.stem else None

    def save(self, state: UploadState) -> None:
        """Write atomically (a kill mid-write leaves the old state or the new, never half)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        file = self._file(state.key)
        temporary = file.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(state.model_dump_json())
        temporary.chmod(0o600)
        temporary.replace(file)

    def forget(self, state: UploadState) -> None:
        self._file(state.key).unlink(missing_ok=True)

    def others_for(self, server: str, path: str) -> list[UploadState]:
        """States left for the same path on the same server: earlier versions of the file."""
        found: list[UploadState] = []
        if not self.directory.is_dir():
            return found
        for file in self.directory.glob("*.json"):
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(file.read_bytes())
                if isinstance(data, dict) and data.get("server") == server and data.get("path") == path:
                    with contextlib.suppress(ValidationError):
                        found.append(UploadState.model_validate(data))
        return found
