"""The two processes bench/ws_latency.py starts besides its clients.

    ws_peer.py serve   DATA_DIR PORT [--publish USERS_JSON RATE SECONDS START_FILE STORE]
    ws_peer.py publish USERS_JSON RATE SECONDS START_FILE STORE REDIS_URL DATA_DIR

``serve`` runs vidgate as ``vidgate serve`` does (settings from the environment); with
``--publish`` it also publishes from a thread of its own process, through the in-process bus.
``publish`` is a worker-like process publishing through Redis. Both wait for START_FILE so the
clients are connected first, then publish one upload_progress per user in turn at RATE per
second for SECONDS, as vidgate's services do: stored (numbered in the user's stream) in a
transaction of the server's database, published after the commit. The event's own timestamp
is taken before that transaction, so the latency includes storing it. With STORE ``bus``
events go straight onto the bus, unnumbered and not stored: how vidgate published them before
the event store (the peer the store's cost is measured against).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import uvicorn

from vidgate.app import uvicorn_config
from vidgate.config import load_settings
from vidgate.db.engine import Database
from vidgate.events.bus import RedisBus
from vidgate.events.publisher import EventPublisher
from vidgate.events.schema import UploadProgress, UploadProgressData


def publish_steadily(
    events: EventPublisher, user_ids: list[str], rate: float, seconds: float, start_file: Path, store: str = "store"
) -> None:
    while not start_file.exists():
        time.sleep(0.01)
    total = int(rate * seconds)
    began = time.monotonic()
    for n in range(total):
        due = began + n / rate
        if (delay := due - time.monotonic()) > 0:
            time.sleep(delay)
        user = user_ids[n % len(user_ids)]
        data = UploadProgressData(chunks_received=n, total_chunks=total, bytes_received=n, progress_percentage=0.0)
        if store == "bus":
            assert events.bus is not None
            events.bus.publish(UploadProgress(session_id=f"bench-{user}", data=data, audience=[user]))
            continue
        event = UploadProgress(session_id=f"bench-{user}", data=data)
        with events.db.session() as session:
            events.to_user(event, user, session)


def serve(data_dir: str, port: str, publish: list[str]) -> None:
    settings = load_settings(server={"data_dir": data_dir, "port": int(port), "log_level": "warning"})
    config = uvicorn_config(settings)
    server = uvicorn.Server(config)
    if publish:
        users_json, rate, seconds, start_file, store = publish

        def publisher() -> None:
            while not server.started:
                time.sleep(0.01)
            events = config.app.state.services.events
            users = json.loads(Path(users_json).read_text())
            publish_steadily(events, users, float(rate), float(seconds), Path(start_file), store)

        threading.Thread(target=publisher, daemon=True).start()
    server.run()


def main(argv: list[str]) -> None:
    if argv[0] == "serve":
        data_dir, port, *rest = argv[1:]
        serve(data_dir, port, rest[1:] if rest[:1] == ["--publish"] else [])
    elif argv[0] == "publish":
        users_json, rate, seconds, start_file, store, redis_url, data_dir = argv[1:]
        users = json.loads(Path(users_json).read_text())
        db = Database(load_settings(server={"data_dir": data_dir}).database_url)
        events = EventPublisher(RedisBus(redis_url), db)
        publish_steadily(events, users, float(rate), float(seconds), Path(start_file), store)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
