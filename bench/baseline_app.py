"""The ceiling of our stack: FastAPI under the same uvicorn (httptools + uvloop) that reads
the request body as it streams in and throws it away."""

from __future__ import annotations

from fastapi import FastAPI, Request

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
