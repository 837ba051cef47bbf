"""Serve a stored file's bytes with the kernel's ``sendfile``: no copy through Python.

Through ASGI every byte of a response is read into a Python buffer and written out again:
two copies and two system calls per piece, and for 1 MiB ranges (what a ``<video>`` asks for
while it plays and seeks) that kept ``GET /v1/videos/{id}/content`` at 23-47 % of a bare
``sendfile`` server (bench/library.py). ASGI specifies the way out, the
``http.response.zerocopysend`` extension: the app hands the server a file descriptor, an
offset and a count, and the server sends them. uvicorn does not offer it, so
:class:`ZeroCopyHttpToolsProtocol` is uvicorn's httptools protocol with that extension, as
:mod:`vidgate.api.ws_protocol` is its WebSocket protocol with prebuilt frames.

The bytes go with ``os.sendfile`` on the connection's socket, and only while the transport's
own write buffer is empty, so nothing it still holds (the status line and headers, if the
socket was full) is overtaken. When the socket is full the send waits for it to become
writable again, watched through a duplicate of its descriptor: uvloop refuses a reader or
writer on a descriptor its transport owns, and epoll reports the same socket through the
duplicate. A piece whose pages are not in the page cache is sent from a worker thread, so a
cold disk never stalls the event loop (``sendfile`` waits for the file, not only the socket).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import anyio.to_thread
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

#: the ASGI extension (scope key and message type)
ZEROCOPY_SEND = "http.response.zerocopysend"

#: largest piece one ``sendfile`` call is asked for: the page-cache check covers its two ends
ZEROCOPY_PIECE = 4 << 20

_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)


class ZeroCopyHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus ``http.response.zerocopysend`` in every request's
    scope and a send that carries it out."""

    _sender: ZeroCopySender | None = None

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        self._sender = ZeroCopySender(cycle, app)
        super()._start_asgi_task(cycle, self._sender)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._sender is not None:
            self._sender.wake()  # a send waiting for the socket: it is gone


class ZeroCopySender:
    """The app of one request, wrapped: its ``http.response.zerocopysend`` messages are sent
    with ``sendfile``, every other message goes to uvicorn's cycle unchanged."""

    def __init__(self, cycle: RequestResponseCycle, app: Any) -> None:
        self.cycle = cycle
        self.app = app
        self._waiter: asyncio.Future[None] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        scope.setdefault("extensions", {})[ZEROCOPY_SEND] = {}
        self._send = send
        await self.app(scope, receive, self.send)

    async def send(self, message: Any) -> None:
        cycle = self.cycle
        if message["type"] != ZEROCOPY_SEND:
            await self._send(message)
            return
        fd = message["file"] if isinstance(message["file"], int) else message["file"].fileno()
        offset = message.get("offset")
        if offset is None:
            offset = os.lseek(fd, 0, os.SEEK_CUR)
        count = message.get("count")
        if count is None:
            count = os.fstat(fd).st_size - offset
        more_body = bool(message.get("more_body", False))
        if not cycle.response_started or cycle.response_complete:
            raise RuntimeError(f"Unexpected ASGI message {ZEROCOPY_SEND!r} outside a response body.")
        if cycle.chunked_encoding or cycle.scope["method"] == "HEAD":
            await self._copied(fd, offset, count, more_body)  # framing sendfile cannot do
            return
        if count > cycle.expected_content_length:
            raise RuntimeError("Response content longer than Content-Length")
        if cycle.flow.write_paused and not cycle.disconnected:
            await cycle.flow.drain()
        if cycle.disconnected:
            return
        sent = await self._sendfile(fd, offset, count)
        if cycle.disconnected:
            return
        if sent < count:
            raise RuntimeError(f"file ended {count - sent} bytes before the count sent ({offset + sent})")
        cycle.expected_content_length -= count
        # What uvicorn's cycle does after a body message: an empty final one completes the
        # response (and checks the Content-Length).
        await self._send({"type": "http.response.body", "body": b"", "more_body": more_body})

    async def _sendfile(self, fd: int, offset: int, count: int) -> int:
        """``count`` bytes of ``fd`` from ``offset`` to the socket; what was sent (less if the
        file ends first or the client leaves)."""
        transport = self.cycle.transport
        socket_fd = transport.get_extra_info("socket").fileno()
        watched: int | None = None
        sent = 0
        try:
            while sent < count and not self.cycle.disconnected:
                if transport.get_write_buffer_size() == 0:
                    piece = min(ZEROCOPY_PIECE, count - sent)
                    try:
                        if _cached(fd, offset + sent, piece):
                            wrote = os.sendfile(socket_fd, fd, offset + sent, piece)
                        else:
                            wrote = await anyio.to_thread.run_sync(os.sendfile, socket_fd, fd, offset + sent, piece)
                    except BlockingIOError:
                        wrote = -1
                    except (BrokenPipeError, ConnectionResetError):
                        self.cycle.disconnected = True
                        break
                    if wrote == 0:
                        break  # the file ended
                    if wrote > 0:
                        sent += wrote
                        continue
                if watched is None:
                    watched = os.dup(socket_fd)
                await self._writable(watched)
        finally:
            if watched is not None:
                os.close(watched)
        return sent

    async def _writable(self, fd: int) -> None:
        """Until ``fd``'s socket can take more (or the connection is lost)."""
        if self.cycle.transport.get_write_buffer_size():
            # uvloop is still writing what it holds (it owns the socket until then): rare, as
            # the only bytes written around these are the status line and headers
            await asyncio.sleep(0.001)
            return
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        loop.add_writer(fd, self.wake)
        try:
            await waiter
        finally:
            loop.remove_writer(fd)
            self._waiter = None

    def wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _copied(self, fd: int, offset: int, count: int, more_body: bool) -> None:
        """The plain path, for a response sendfile cannot frame (chunked, HEAD)."""
        end = offset + count
        while True:
            size = min(ZEROCOPY_PIECE, end - offset)
            body = await anyio.to_thread.run_sync(os.pread, fd, size, offset) if size else b""
            offset += len(body)
            last = not body or offset >= end
            await self._send({"type": "http.response.body", "body": body, "more_body": more_body or not last})
            if last:
                return


def _cached(fd: int, offset: int, size: int) -> bool:
    """Whether the first and the last byte of the piece are in the page cache (``preadv`` with
    ``RWF_NOWAIT`` answers without waiting for a disk); False where the system cannot say."""
    if _NOWAIT is None:
        return False
    probe = bytearray(1)
    try:
        return os.preadv(fd, [probe], offset, _NOWAIT) == 1 and os.preadv(fd, [probe], offset + size - 1, _NOWAIT) == 1
    except OSError:
        return False
