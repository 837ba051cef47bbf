"""The baselines of bench/library.py's content serving, one file and nothing else (no key, no
database, no routing beyond one path):

- ``app``: Starlette's FileResponse at ``/file`` (serves Range itself, reading the file in 64 KiB
  chunks, a thread hop each), and vidgate's own StoredFileResponse at ``/stored`` (what the
  content route answers with), both under the same uvicorn (uvloop + httptools) as vidgate;
- ``python bench/sendfile_app.py --uvicorn-zerocopy --port N``: ``app`` under the uvicorn protocol
  ``vidgate serve`` runs (:mod:`vidgate.api.http_protocol`), so ``/stored`` goes out with
  ``sendfile``: the least any ASGI app on that server can cost, with no middleware, key or lookup;
- ``python bench/sendfile_app.py --port N``: a bare HTTP/1.1 server on asyncio's own event
  loop whose body is ``loop.sendfile`` (the kernel's zero-copy ``sendfile(2)``: the bytes never
  enter Python), with keep-alive and one ``Range: bytes=a-b`` / ``bytes=a-``. What no ASGI
  server can do (uvicorn has no ``http.response.pathsend``): the ceiling of the machine.

    BENCH_FILE=/path/to/file python -m uvicorn bench.sendfile_app:app --loop uvloop --http httptools
    BENCH_FILE=/path/to/file python bench/sendfile_app.py --port 8001
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from vidgate.api.library import StoredFileResponse

PATH = Path(os.environ["BENCH_FILE"])
_RANGE = re.compile(rb"bytes=(\d+)-(\d*)")


async def content(request: Request) -> FileResponse:
    return FileResponse(PATH, media_type="video/mp4")


async def stored(request: Request) -> Response:
    """vidgate's own file response (the content route's, without key, database or middleware)."""
    size = PATH.stat().st_size
    header = request.headers.get("range")
    ranges = FileResponse._parse_range_header(header, size) if header else []
    fd = os.open(PATH, os.O_RDONLY)
    return StoredFileResponse(fd, size, ranges[0] if ranges else None, "video/mp4", {}, request.method == "HEAD")


app = Starlette(
    routes=[Route("/file", content, methods=["GET", "HEAD"]), Route("/stored", stored, methods=["GET", "HEAD"])]
)


async def _serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    loop = asyncio.get_running_loop()
    size = PATH.stat().st_size
    with PATH.open("rb") as file:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                method = lines[0].split(b" ", 1)[0]
                start, end, status = 0, size, b"200 OK"
                extra = b""
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"range" and (found := _RANGE.fullmatch(value.strip())):
                        start = int(found[1])
                        end = min(size, int(found[2]) + 1) if found[2] else size
                        status = b"206 Partial Content"
                        extra = b"Content-Range: bytes %d-%d/%d\r\n" % (start, end - 1, size)
                writer.write(
                    b"HTTP/1.1 " + status + b"\r\nContent-Type: video/mp4\r\nAccept-Ranges: bytes\r\n"
                    b"Content-Length: %d\r\n" % (end - start) + extra + b"\r\n"
                )
                if method != b"HEAD" and end > start:
                    await writer.drain()
                    await loop.sendfile(writer.transport, file, start, end - start)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _main(port: int) -> None:
    server = await asyncio.start_server(_serve_connection, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--uvicorn-zerocopy",
        action="store_true",
        help="serve `app` under uvicorn with vidgate's zero-copy httptools protocol instead",
    )
    args = parser.parse_args()
    if args.uvicorn_zerocopy:
        import uvicorn

        from vidgate.api.http_protocol import ZeroCopyHttpToolsProtocol

        uvicorn.run(
            app, host="127.0.0.1", port=args.port, loop="uvloop", http=ZeroCopyHttpToolsProtocol, log_level="warning"
        )
    else:
        asyncio.run(_main(args.port))
