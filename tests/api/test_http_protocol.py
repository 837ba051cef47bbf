"""The zero-copy body path of ``vidgate serve`` (vidgate.api.http_protocol): a real uvicorn with
the protocol serving a real file through ``http.response.zerocopysend`` to real sockets, fast
and slow readers, several requests on one connection, a client that leaves, a file shorter
than promised, a cold piece sent from a thread, and the framing sendfile cannot do."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import uvicorn

from tests.conftest import free_port
from tests.helpers import wait_until
from vidgate.api import http_protocol
from vidgate.api.http_protocol import ZEROCOPY_SEND, ZeroCopyHttpToolsProtocol

SIZE = 24 << 20  # larger than a loopback socket's buffer: a slow reader makes the send wait


class FileApp:
    """Serves ``path`` with the extension: ``?offset=&count=`` (a range), ``&claim=N`` (a
    Content-Length of N, more than the count), ``&chunked=1`` (no Content-Length)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.scopes: list[dict[str, Any]] = []
        self.closed = threading.Event()
        self.loop_thread = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.scopes.append(scope)
        self.loop_thread = threading.get_ident()
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        offset = int(query.get("offset", 0))
        count = int(query.get("count", SIZE - offset))
        headers = [] if "chunked" in query else [(b"content-length", query.get("claim", str(count)).encode())]
        fd = os.open(self.path, os.O_RDONLY)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": ZEROCOPY_SEND, "file": fd, "offset": offset, "count": count})
        finally:
            os.close(fd)
            self.closed.set()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    path = tmp_path_factory.mktemp("zerocopy") / "file.bin"
    payload = os.urandom(SIZE)
    path.write_bytes(payload)
    return path, payload


@pytest.fixture
def served(data: tuple[Path, bytes]) -> Iterator[tuple[str, FileApp]]:
    app = FileApp(data[0])
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, loop="uvloop", http=ZeroCopyHttpToolsProtocol, log_level="critical"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def test_the_scope_offers_the_extension_and_a_whole_file_arrives_intact(
    served: tuple[str, FileApp], data: tuple[Path, bytes]
) -> None:
    url, app = served
    response = httpx.get(f"{url}/")
    assert response.status_code == 200 and response.content == data[1]
    assert ZEROCOPY_SEND in app.scopes[0]["extensions"]


def test_ranges_on_one_kept_alive_connection_each_get_their_bytes(
    served: tuple[str, FileApp], data: tuple[Path, bytes]
) -> None:
    url, _ = served
    with httpx.Client(base_url=url) as client:
        for offset, count in ((0, 1), (12_345, 1 << 20), (SIZE - 10, 10), (5, 9 << 20), (0, 0)):
            response = client.get(f"/?offset={offset}&count={count}")
            assert response.content == data[1][offset : offset + count]


def test_a_slow_reader_gets_every_byte_in_order(served: tuple[str, FileApp], data: tuple[Path, bytes]) -> None:
    """The socket fills many times over: each time the send waits for it and goes on."""
    url, _ = served
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        received = bytearray()
        while len(received) < SIZE + 40:
            piece = sock.recv(256 << 10)
            if not piece:
                break
            received += piece
            if len(received) < 4 << 20:
                time.sleep(0.002)  # slow at first: the server's sends hit a full socket
            if b"\r\n\r\n" in received and len(received) - received.index(b"\r\n\r\n") - 4 >= SIZE:
                break
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == data[1]


def test_a_client_that_leaves_mid_file_ends_the_send(served: tuple[str, FileApp]) -> None:
    url, app = served
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        sock.recv(1 << 16)  # the send has started, and waits for this socket
    assert app.closed.wait(10)  # the app's send returned: it did not wait for a gone socket


def test_a_file_shorter_than_its_count_closes_the_connection_short(
    served: tuple[str, FileApp], data: tuple[Path, bytes]
) -> None:
    url, _ = served
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"{url}/?offset={SIZE - 100}&count=200&claim=200")


def test_a_piece_not_in_the_page_cache_is_sent_from_a_thread(
    served: tuple[str, FileApp], data: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, app = served
    threads: list[int] = []
    real = os.sendfile

    def sendfile(*args: int) -> int:
        threads.append(threading.get_ident())
        return real(*args)

    monkeypatch.setattr(http_protocol, "_cached", lambda fd, offset, size: False)
    monkeypatch.setattr(os, "sendfile", sendfile)
    response = httpx.get(f"{url}/?offset=7&count={5 << 20}")
    assert response.content == data[1][7 : 7 + (5 << 20)]
    assert threads and app.loop_thread not in threads  # never on the event loop


def test_a_response_without_content_length_is_sent_chunked_by_copying(
    served: tuple[str, FileApp], data: tuple[Path, bytes]
) -> None:
    url, _ = served
    response = httpx.get(f"{url}/?offset=3&count={6 << 20}&chunked=1")
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.content == data[1][3 : 3 + (6 << 20)]


def test_page_cache_check_sees_a_cached_file(data: tuple[Path, bytes]) -> None:
    fd = os.open(data[0], os.O_RDONLY)
    try:
        os.pread(fd, 1 << 20, 0)  # read just now: cached
        assert http_protocol._cached(fd, 0, 1 << 20) is True
    finally:
        os.close(fd)
