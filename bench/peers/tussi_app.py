"""tussi as its README's quick start sets it up: the ``TUSApp`` ASGI callable with
``FilesystemStorage`` (defaults, so it fsyncs every PATCH) staging in
``$PEER_FILES_DIR/uploads`` and finished files moved to ``$PEER_FILES_DIR/completed``.
Uploads go to ``/files/``. Runs in its own venv (bench/.peers/tussi), made by
bench/ingest.py."""

from __future__ import annotations

import os
from pathlib import Path

from tussi import FilesystemStorage, TUSApp

data = Path(os.environ["PEER_FILES_DIR"])
tus = TUSApp(storage=FilesystemStorage(directory=data / "uploads"), completed_dir=data / "completed")
