"""The ceiling of a *server* in front of this S3 on this machine: a bare tus app (FastAPI under
the same uvicorn, httptools + uvloop) that forwards every PATCH body, as it arrives, as the parts
of one S3 multipart upload, with the botocore client vidgate makes (vidgate.storage.s3.make_client:
the same configuration, pool and hooks), and completes the multipart upload at the last PATCH.
Nothing else: no hashing, no validation, no database, no spooling (parts are gathered in memory),
no server-side copy. A PATCH answers once its parts are in S3, as a tus server must (a rest under
S3's 5 MiB part minimum that is not the upload's end is kept in memory: a ceiling may cheat there;
tuspy's 10 MiB PATCHes leave none).

Each PATCH is cut by its Content-Length into parts of ``FORWARD_PART_SIZE`` (default vidgate's
STORAGE_S3_PART_SIZE, 16 MiB), sent while the rest of the body still arrives (at most
``FORWARD_CONCURRENCY``, default 4, in flight); the last part of a request takes what is left (so
none is under 5 MiB). ``FORWARD_SPLIT=1`` also cuts a request under the part size into parts of
5 MiB or more, so that even a 10 MiB PATCH overlaps its upload with its receipt: on this Swift that
was no faster (45.0 against 47.6 MB/s, 128 MiB, tuspy's 10 MiB PATCHes: Swift costs ~0.12 s per
request, so two 5 MiB parts cost more than one of 10 MiB), hence off by default.
The upload's id in its Location is its key in the bucket (bench/ingest.py reads it back
to check the stored bytes).

    PEER_S3_BUCKET=... AWS_* STORAGE_S3_ENDPOINT_URL=... uvicorn s3_forward_app:app
"""

from __future__ import annotations

import asyncio
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, Response

from vidgate.config import StorageSettings
from vidgate.storage.s3 import make_client

MIB = 1 << 20
MIN_PART = 5 * MIB
BUCKET = os.environ.get("PEER_S3_BUCKET", "vidgate-bench")
PREFIX = os.environ.get("PEER_S3_PREFIX", "forward-")
PART_SIZE = int(os.environ.get("FORWARD_PART_SIZE", str(16 * MIB)))
CONCURRENCY = int(os.environ.get("FORWARD_CONCURRENCY", "4"))
SPLIT = os.environ.get("FORWARD_SPLIT", "0") == "1"  # cut a request under PART_SIZE into parts of >= 5 MiB
TUS = {"Tus-Resumable": "1.0.0"}

STORAGE = StorageSettings(backend="s3", s3_bucket=BUCKET, s3_concurrency=CONCURRENCY)  # STORAGE_S3_* from env
client: Any = make_client(STORAGE)
pool = ThreadPoolExecutor(max_workers=2 * CONCURRENCY, thread_name_prefix="forward")
app = FastAPI()


@dataclass
class Upload:
    key: str
    upload_id: str
    length: int
    offset: int = 0
    parts: list[dict[str, Any]] = field(default_factory=list)
    carry: bytes = b""  # a rest under 5 MiB that is not the end (in memory: see the docstring)


uploads: dict[str, Upload] = {}


def part_sizes(length: int) -> list[int]:
    """``length`` bytes as parts: of PART_SIZE, or smaller (>= 5 MiB) to have more than one,
    the last taking the rest."""
    if length < 2 * MIN_PART:
        return [length]
    size = min(PART_SIZE, max(MIN_PART, length // CONCURRENCY)) if SPLIT else PART_SIZE
    count = max(1, length // size)
    return [size] * (count - 1) + [length - size * (count - 1)]


def _put_part(upload: Upload, number: int, body: bytes) -> dict[str, Any]:
    answer = client.upload_part(Bucket=BUCKET, Key=upload.key, UploadId=upload.upload_id, PartNumber=number, Body=body)
    return {"PartNumber": number, "ETag": answer["ETag"]}


async def _call(function: Any, *args: Any) -> Any:
    return await asyncio.wrap_future(pool.submit(function, *args))


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.options("/files/")
async def options() -> Response:
    return Response(status_code=204, headers={**TUS, "Tus-Version": "1.0.0"})


@app.post("/files/")
async def create(request: Request) -> Response:
    name = uuid.uuid4().hex
    key = f"{PREFIX}{name}"
    answer = await _call(lambda: client.create_multipart_upload(Bucket=BUCKET, Key=key))
    uploads[name] = Upload(key, answer["UploadId"], int(request.headers["upload-length"]))
    return Response(status_code=201, headers={**TUS, "Location": f"/files/{key}"})


@app.patch("/files/{key}")
async def patch(key: str, request: Request) -> Response:
    upload = uploads[key.removeprefix(PREFIX)]
    if int(request.headers["upload-offset"]) != upload.offset:
        return Response(status_code=409, headers=TUS)
    length = len(upload.carry) + int(request.headers["content-length"])
    final = upload.offset + int(request.headers["content-length"]) == upload.length
    sizes = part_sizes(length) if final or length >= MIN_PART else []
    inflight: list[asyncio.Future[dict[str, Any]]] = []
    buffer = bytearray(upload.carry)
    next_number = len(upload.parts) + 1

    async def send(body: bytes) -> None:
        nonlocal next_number
        while len(inflight) >= CONCURRENCY:
            done, _ = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                inflight.remove(future)
                upload.parts.append(future.result())
        inflight.append(asyncio.wrap_future(pool.submit(_put_part, upload, next_number, body)))
        next_number += 1

    async for data in request.stream():
        buffer += data
        while sizes and len(buffer) >= sizes[0]:
            size = sizes.pop(0)
            body = bytes(buffer[:size])
            del buffer[:size]
            await send(body)
    for result in await asyncio.gather(*inflight):
        upload.parts.append(result)
    upload.carry = bytes(buffer)  # empty unless the request was under 5 MiB and not the last
    upload.offset += int(request.headers["content-length"])
    if final:
        parts = sorted(upload.parts, key=lambda part: part["PartNumber"])
        await _call(
            lambda: client.complete_multipart_upload(
                Bucket=BUCKET, Key=upload.key, UploadId=upload.upload_id, MultipartUpload={"Parts": parts}
            )
        )
        del uploads[key.removeprefix(PREFIX)]
    return Response(status_code=204, headers={**TUS, "Upload-Offset": str(upload.offset)})
