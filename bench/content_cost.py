"""The app's own CPU per ``GET /v1/videos/{id}/content`` request, without HTTP and without the
bytes: what the content route costs beyond the kernel's ``sendfile``, which is what keeps
``bench/library.py``'s 1 MiB ranges below the bare ``sendfile`` server.

    .venv/bin/python bench/content_cost.py [--requests 8000] [--runs 3] [--compare-src ../main/src]

Builds the real app on a fresh embedded data directory with one stored 4 MiB video, runs its
lifespan, then calls the ASGI app directly on its own event loop with the scope ``vidgate
serve``'s protocol gives (the zero-copy extension, so the body is one message the fake send
drops) and a cached key: CPU time of the process per request (``time.process_time``, so
other load on the machine counts less than in wall time), the median of ``--runs``. Rows:
a player's plain GET (``bytes=N-M``), and the same with an ``Origin`` header (a cross-origin
page: the whole middleware stack, CORS included). ``--compare-src`` runs the same in another
checkout's sources (a subprocess with ``PYTHONPATH``), as rows of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.library import store_one_video

ROWS = {"plain GET (a player's range)": (), "with Origin (cross-origin page)": ((b"origin", b"https://desk.example"),)}


def measure(requests: int, runs: int) -> dict[str, list[float]]:
    """µs of CPU per request of each row, one number per run."""
    from starlette.testclient import TestClient

    from vidgate.api.http_protocol import ZEROCOPY_SEND
    from vidgate.app import create_app
    from vidgate.config import load_settings

    tmp = Path(tempfile.mkdtemp(prefix="content-cost-"))
    os.environ.update({"VIDGATE_DATA_DIR": str(tmp / "data"), "AUTH_CREATE_DEV_KEY": "false"})
    os.environ["VIDGATE_LOG_LEVEL"] = "warning"
    app = create_app(load_settings())
    results: dict[str, list[float]] = {name: [] for name in ROWS}
    with TestClient(app) as client:
        source = tmp / "file.bin"
        source.write_bytes(os.urandom(4 << 20))
        key, _, video_id = store_one_video(app.state.services.db, app.state.services.processing.blobs, source)
        path = f"/v1/videos/{video_id}/content"
        statuses: set[int] = set()

        def scope(extra: tuple[tuple[bytes, bytes], ...]) -> dict[str, Any]:
            headers = [(b"host", b"127.0.0.1"), (b"user-agent", b"bench"), (b"x-api-key", key.encode())]
            headers += [(b"range", b"bytes=1000-1049575"), *extra]
            return {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "GET",
                "scheme": "http",
                "path": path,
                "raw_path": path.encode(),
                "root_path": "",
                "query_string": b"",
                "headers": headers,
                "client": ("127.0.0.1", 50000),
                "server": ("127.0.0.1", 8000),
                "extensions": {ZEROCOPY_SEND: {}},
                "state": {},
            }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.add(message["status"])

        async def timed(extra: tuple[tuple[bytes, bytes], ...]) -> float:
            for _ in range(200):  # the key cache, the route's set-up
                await app(scope(extra), receive, send)
            started = time.process_time()
            for _ in range(requests):
                await app(scope(extra), receive, send)
            return (time.process_time() - started) / requests * 1e6

        for _ in range(runs):
            for name, extra in ROWS.items():
                results[name].append(client.portal.call(timed, extra))
        if statuses != {206}:
            raise SystemExit(f"the app answered {statuses}, not only 206")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=8000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--compare-src", help="another checkout's src/: its rows in the same run")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # a --compare-src child's answer
    args = parser.parse_args()
    if args.json:
        print(json.dumps(measure(args.requests, args.runs)))
        return
    tables = {"this checkout": measure(args.requests, args.runs)}
    if args.compare_src:
        command = [sys.executable, __file__, "--json", "--requests", str(args.requests), "--runs", str(args.runs)]
        env = {**os.environ, "PYTHONPATH": args.compare_src}
        answer = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
        tables[args.compare_src] = json.loads(answer.strip().splitlines()[-1])
    print(f"\nCPU µs per content request in the app (median of {args.runs} runs of {args.requests}; no HTTP, no bytes)")
    print("| sources | " + " | ".join(ROWS) + " |")
    print("|---|" + "---:|" * len(ROWS))
    for sources, rows in tables.items():
        cells = [f"{statistics.median(rows[name]):.0f} ({min(rows[name]):.0f}-{max(rows[name]):.0f})" for name in ROWS]
        print(f"| {sources} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
