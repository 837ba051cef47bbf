"""The baseline of bench/library.py's content serving: one file behind Starlette's FileResponse
(which serves Range itself, reading the file in chunks, as vidgate's content endpoint does) and
nothing else: no key, no database, no routing beyond one path. Run under the same uvicorn
(uvloop + httptools) as vidgate.

    BENCH_FILE=/path/to/file python -m uvicorn bench.sendfile_app:app --loop uvloop --http httptools
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Route

PATH = os.environ["BENCH_FILE"]


async def content(request: Request) -> FileResponse:
    return FileResponse(PATH, media_type="video/mp4")


app = Starlette(routes=[Route("/file", content, methods=["GET", "HEAD"])])
