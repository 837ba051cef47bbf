"""A TCP relay in front of a test server that notes what passes through it.

Counting on the wire is how the tests see what the client really sent: which chunk indexes
(each upload request's ``chunk_index`` form field) and how many connections it opened.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Iterator

CHUNK_INDEX = re.compile(rb'name="chunk_index"\r\n\r\n(\d+)\r\n')


class CountingProxy:
    def __init__(self, target_url: str) -> None:
        host, port = target_url.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.chunk_indexes: list[int] = []
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        with self.lock:
            self.chunk_indexes.clear()
            self.connections = 0

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.connections += 1
            ended = threading.Semaphore(0)
            for source, target, scan in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._relay, args=(source, target, scan, ended), daemon=True).start()
            threading.Thread(target=self._close_after, args=(ended, client, upstream), daemon=True).start()

    @staticmethod
    def _close_after(ended: threading.Semaphore, *sockets: socket.socket) -> None:
        for _ in range(2):
            ended.acquire()
        for sock in sockets:
            sock.close()

    def _relay(self, source: socket.socket, target: socket.socket, scan: bool, ended: threading.Semaphore) -> None:
        tail = b""
        try:
            while data := source.recv(1 << 16):
                target.sendall(data)
                if scan:
                    window, last = tail + data, 0
                    for match in CHUNK_INDEX.finditer(window):
                        with self.lock:
                            self.chunk_indexes.append(int(match.group(1)))
                        last = match.end()
                    tail = window[max(last, len(window) - 64) :]
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                target.shutdown(socket.SHUT_WR)
            with contextlib.suppress(OSError):
                source.shutdown(socket.SHUT_RD)
            ended.release()


@contextlib.contextmanager
def counting_proxy(target_url: str) -> Iterator[CountingProxy]:
    proxy = CountingProxy(target_url)
    try:
        yield proxy
    finally:
        proxy.close()
