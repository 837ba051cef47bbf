"""The Prometheus endpoint of ``vidgate worker --metrics-port``.

Celery runs jobs in forked pool processes, so the counters live in several processes:
prometheus_client's multiprocess mode has each write its values to files in one folder that
this endpoint (in the worker's main process) adds up. :func:`serve` must run before
prometheus_client is imported anywhere in the process. The folder is the worker's own: it is
removed when the worker exits, and folders left by workers that were killed are removed when
the next worker starts.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from vidgate.processing.lease import process_alive

FOLDER_PREFIX = "vidgate-metrics-"

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def remove_stale_folders(parent: Path) -> list[Path]:
    """Remove metrics folders of this user's workers that are no longer running (named
    ``vidgate-metrics-<pid>-...``): a killed worker cannot remove its own."""
    removed = []
    for folder in parent.glob(f"{FOLDER_PREFIX}*"):
        pid_text = folder.name.removeprefix(FOLDER_PREFIX).split("-", 1)[0]
        try:
            if not pid_text.isdigit() or folder.stat().st_uid != os.getuid() or process_alive(int(pid_text)):
                continue
        except FileNotFoundError:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _remove_at_exit(folder: str, owner: int) -> None:
    """Remove the folder when the process that made it exits (forked pool processes inherit
    the exit handler but must leave the folder to their parent)."""
    if os.getpid() == owner:
        shutil.rmtree(folder, ignore_errors=True)


def guarded(app: WsgiApp, token: str | None) -> WsgiApp:
    """``app`` behind ``Authorization: Bearer <token>`` (when a token is set); refusals get the
    API's 401 JSON error."""
    from vidgate.metrics import token_matches

    def check(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if token_matches(token, environ.get("HTTP_AUTHORIZATION")):
            return app(environ, start_response)
        body = json.dumps(
            {
                "success": False,
                "error": {
                    "code": "unauthenticated",
                    "message": "The metrics need the metrics token: send Authorization: Bearer <METRICS_TOKEN>.",
                },
            }
        ).encode()
        start_response(
            "401 Unauthorized",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("WWW-Authenticate", "Bearer")],
        )
        return [body]

    return check


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not worth a log line each
        return None


def serve(port: int, host: str, token: str | None) -> WSGIServer:
    """Start the endpoint in a daemon thread; returns its server (bound before this returns)."""
    parent = Path(tempfile.gettempdir())
    remove_stale_folders(parent)
    folder = tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-", dir=parent)
    atexit.register(_remove_at_exit, folder, os.getpid())
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    from prometheus_client import CollectorRegistry, make_wsgi_app
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = family

    server = make_server(host, port, guarded(make_wsgi_app(registry), token), Server, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, name="vidgate-metrics", daemon=True)
    thread.start()
    atexit.register(server.shutdown)
    return server
