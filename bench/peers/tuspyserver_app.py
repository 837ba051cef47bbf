"""tuspyserver as its README sets it up: a FastAPI app with the tus router on ``/files``,
local-disk storage (the default) in ``$PEER_FILES_DIR``. Runs in its own venv
(bench/.peers/tuspyserver), made by bench/ingest.py."""

from __future__ import annotations

import os

from fastapi import FastAPI
from tuspyserver import create_tus_router

app = FastAPI()
app.include_router(create_tus_router(prefix="files", files_dir=os.environ["PEER_FILES_DIR"]))
