"""The short way to a video's bytes: ``GET /v1/videos/{id}/content`` without the app's stack.

A ``<video>`` element asks for a range per seek and while it plays, and for 1 MiB ranges the
work around the answer cost more than the answer: the middlewares (CORS, metrics, tus, the
exception handlers) and routing through included routers took ~40 % of the server's time per
request, the lookup and the kernel's ``sendfile`` the rest (py-spy, ``bench/library.py``).
:class:`ContentShortcut` sits outside them and answers the plain case itself: a GET of that
path with no ``Origin`` (so CORS adds nothing), which :func:`~vidgate.api.library.serve_content`
answers without raising. It counts the request in the same metrics. Anything else (HEAD, a
cross-origin request, an error of any kind) goes through the app as before, from the start:
a GET has no body to have consumed, and the shortcut sends nothing before it knows its
answer, so the app's answer, errors included, is exactly the one it always gave.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from vidgate.api.library import CONTENT_PATH, serve_content
from vidgate.metrics import StatusSeen, count_request

#: the route's path as its router matches it (Starlette's own compilation of the template)
_CONTENT = compile_path(CONTENT_PATH)[0]
_METHOD = "GET"


class ContentShortcut:
    """ASGI middleware: plain content GETs answered straight, everything else passed on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != _METHOD or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        found = _CONTENT.match(scope["path"])
        if found is None or any(name == b"origin" for name, _ in scope["headers"]):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        scope["path_params"] = found.groupdict()
        try:
            response = await serve_content(Request(scope, receive, send))
        except Exception:  # the app answers it as it answers every error (nothing was sent yet)
            await self.app(scope, receive, send)
            return
        seen = StatusSeen(send)
        try:
            await response(scope, receive, seen)
        finally:
            count_request(_METHOD, CONTENT_PATH, seen.status, started)
