"""Python client of a running vidgate: resumable, parallel, hash-checked uploads and live results.

    from vidgate.client import VidgateClient

    with VidgateClient("http://127.0.0.1:8000", api_key) as client:
        upload = client.upload("clip.mp4", parallel=4, wait=True)
        print(upload.sha256, upload.video_id, upload.result.fingerprint)

``vidgate upload`` is the same client on the command line.
"""

from vidgate.client.core import DEFAULT_CHUNK_SIZE, DEFAULT_URL, VidgateClient
from vidgate.client.errors import (
    ClientError,
    FileChanged,
    HashMismatch,
    RequestRefused,
    ServerUnreachable,
    WaitTimeout,
)
from vidgate.client.models import (
    ChunkReceipt,
    ProcessingOutcome,
    ProgressUpdate,
    SessionInfo,
    UploadResult,
    VideoAnalysisResult,
    VideoInfo,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_URL",
    "ChunkReceipt",
    "ClientError",
    "FileChanged",
    "HashMismatch",
    "ProcessingOutcome",
    "ProgressUpdate",
    "RequestRefused",
    "ServerUnreachable",
    "SessionInfo",
    "UploadResult",
    "VideoAnalysisResult",
    "VideoInfo",
    "VidgateClient",
    "WaitTimeout",
]
