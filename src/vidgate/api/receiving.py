"""Receiving a request body into an upload: the one owner of abort-and-drain at the HTTP edge.

Both protocols' handlers (:mod:`vidgate.api.uploads`, :mod:`vidgate.api.tus`) stream a body
inside ``async with receiving(request, abort):``. Whatever ends it early (a refusal, a broken
connection, a bug) runs ``abort(error)`` once, which undoes what the write began; after a
refusal the rest of the body is read and dropped, so the client gets to read the answer.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.requests import ClientDisconnect, Request

from vidgate.errors import VidgateError

DRAIN_LIMIT = 16 << 20  # after a refusal, read at most this much more so the client sees the answer


async def drain_request(request: Request, limit: int) -> None:
    """Read (and drop) what the client is still sending, up to ``limit``, so it reads our answer."""
    received = 0
    try:
        async for data in request.stream():
            received += len(data)
            if received > limit:
                return
    except (ClientDisconnect, RuntimeError):
        return


@contextlib.asynccontextmanager
async def receiving(request: Request, abort: Callable[[BaseException], Awaitable[None]]) -> AsyncIterator[None]:
    """Run ``abort(error)`` when the body cannot be received whole, then drain after a refusal."""
    try:
        yield
    except BaseException as exc:
        await abort(exc)
        if isinstance(exc, VidgateError):
            await drain_request(request, DRAIN_LIMIT)
        raise
