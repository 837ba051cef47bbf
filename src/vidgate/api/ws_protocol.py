"""Send one event to a thousand sockets for the price of a thousand writes, nothing more.

Through ASGI every socket pays for every event again: Starlette's and uvicorn's send path, the
frame built anew, and one ``write`` system call per event. A server's frames are not masked
and vidgate does not compress events (``WEBSOCKET_COMPRESSION`` off by default; an
uncompressed message is valid on a connection that negotiated permessage-deflate, RFC 7692
section 6), so the bytes of one event's frame are the same for every receiver. The hub builds
them once (:func:`vidgate.events.hub.text_frame`) and hands a socket all it has queued in one
ASGI message, which :class:`FramedWebSocketsProtocol` (uvicorn's websockets sans-I/O protocol
with one ASGI extension, ``vidgate.frames``) writes with one system call. A socket with nothing
queued is written to straight from the hub's delivery (the extension's ``write``), without
waking its pump task: with 1,000 sockets, waking them was another 9 % of the samples.

Profiled with 1,000 sockets of one user during real uploads (``bench/ws_latency.py``): the
per-event ``transport.write`` was 29 % and the ASGI send path another 15 % of the server's
samples. A server without the extension (another ASGI server, the test client) gets the plain
``send_text`` path: the hub checks for the extension in the scope.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from vidgate.events.hub import FRAMES_EXTENSION


class FramedWebSocketsProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets (sans-I/O) protocol, plus ``vidgate.frames``: a ``websocket.send``
    message with that key writes the frames it holds, joined, with one ``transport.write``; and
    the extension's ``write`` does the same at once, without a coroutine, when it can."""

    async def run_asgi(self) -> None:
        self.scope["extensions"][FRAMES_EXTENSION] = {"write": self.write_frames}
        await super().run_asgi()

    def write_frames(self, frames: Sequence[bytes]) -> bool:
        """Write ``frames`` now if the socket is open and its buffer below the high-water mark
        (uvicorn's flow control); False, and nothing written, otherwise."""
        if not self.writable.is_set() or self.disconnected or self.close_sent or self.conn.state is not State.OPEN:
            return False
        self.transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
        return True

    async def send(self, message: Any) -> None:
        frames = message.get(FRAMES_EXTENSION) if message["type"] == "websocket.send" else None
        if frames is None:
            await super().send(message)
            return
        await self.writable.wait()  # the transport's flow control, as uvicorn's own send
        if not self.write_frames(frames):
            raise ClientDisconnected()  # (what uvicorn's send raises for text on a closing socket)
