"""Upload one file with tuspy, chunk by chunk, remembering the upload URL so that a second run
resumes. Run by tests/api/test_tus_clients.py as a separate process (so it can be killed).

    python tuspy_upload.py ENDPOINT KEY FILE STATE_FILE CHUNK_SIZE PAUSE_SECONDS
Prints "start <offset>" when it begins, "at <offset> <url>" after each PATCH and "done <url>".
"""

from __future__ import annotations

import sys
import time

from tusclient.client import TusClient
from tusclient.storage.filestorage import FileStorage


def main(endpoint: str, key: str, path: str, state: str, chunk_size: str, pause: str) -> None:
    client = TusClient(endpoint, headers={"X-API-Key": key})
    uploader = client.uploader(
        path,
        chunk_size=int(chunk_size),
        metadata={"filename": "resumed.mp4", "filetype": "video/mp4"},
        store_url=True,
        url_storage=FileStorage(state),
        upload_checksum=True,
    )
    print("start", uploader.offset, flush=True)
    while uploader.offset < uploader.get_file_size():
        uploader.upload_chunk()
        print("at", uploader.offset, uploader.url, flush=True)
        time.sleep(float(pause))
    print("done", uploader.url, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
