"""The ceiling of our stack: FastAPI under the same uvicorn (httptools + uvloop) that reads
the request body as it streams in and throws it away. The ``/files/`` routes answer tuspy's
creation POST and PATCH the same way (read, discard, the headers tuspy needs, nothing kept):
the bare stack's cost of a tus upload's requests, for bench/ingest.py's fixed-cost column."""

from __future__ import annotations

import uuid

from fastapi import FastAPI, Request, Response

app = FastAPI()


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/upload/video")
async def discard(request: Request) -> dict[str, int]:
    received = 0
    async for data in request.stream():
        received += len(data)
    return {"received": received}


@app.post("/files/")
async def create(request: Request) -> Response:
    return Response(status_code=201, headers={"Location": f"/files/{uuid.uuid4().hex}", "Tus-Resumable": "1.0.0"})


@app.patch("/files/{upload_id}")
async def patch(upload_id: str, request: Request) -> Response:
    received = int(request.headers.get("upload-offset", "0"))
    async for data in request.stream():
        received += len(data)
    return Response(status_code=204, headers={"Upload-Offset": str(received), "Tus-Resumable": "1.0.0"})
