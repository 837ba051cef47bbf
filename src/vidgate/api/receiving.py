"""Receiving a request body into an upload: the one owner of abort-and-drain at the HTTP edge.

Both protocols' handlers (:mod:`vidgate.api.uploads`, :mod:`vidgate.api.tus`) stream a body
inside ``async with receiving(request, abort):``. Whatever ends it early (a refusal, a broken
connection, a bug) runs ``abort(error)`` once, which undoes what the write began; after a
refusal the rest of the body is read and dropped, so the client gets to read the answer.

``with after_answer() as later:`` around a request that may complete an upload keeps the
hand-over of its video to the in-process queue until the answer is sent (``later.task()``: the
response's background task), so the job's start does not share the CPU with the answer.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request

from vidgate.errors import VidgateError
from vidgate.uploads.completion import deferring, run_all

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


class AfterAnswer:
    """The hand-overs a request's completion kept (:func:`vidgate.uploads.completion.deferring`)."""

    def __init__(self, later: list[Callable[[], object]]) -> None:
        self.later = later

    def task(self) -> BackgroundTask | None:
        """The response's background task that makes them (None when there are none)."""
        return BackgroundTask(self.run) if self.later else None

    async def run(self) -> None:
        run_all(self.later)  # the in-process queue's enqueue: no I/O, so on the loop


@contextlib.contextmanager
def after_answer() -> Iterator[AfterAnswer]:
    """Keep the request's hand-overs for its answer's background task; if the request fails
    instead (no answer of ours will carry them), make them at once. One that is never made (the
    answer could not be sent, the process died) is offered again by the dispatcher."""
    with deferring() as later:
        try:
            yield AfterAnswer(later)
        except BaseException:
            run_all(later)
            raise
