"""Can an upload's answer time tell that another user already had the bytes?

    .venv/bin/python bench/dedup_scope.py [--uploads 20]

Starts a real server (SQLite) per DEDUP_SCOPE and times, over HTTP, the whole-file POST of a
small clip: as a first upload (bytes nobody has: the baseline), as another owner's bytes
(alice uploaded and processed them before), and as the uploader's own bytes again. In
``owner`` scope the second row should match the first (nothing in the answer tells), the
third is a told duplicate. Rows of one table are interleaved, so drift hits them alike.
Also printed: how long each video took to reach ``completed`` (a reused analysis is quicker:
that is what remains to tell).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import make_settings, running_server
from tests.helpers import post_chunk, wait_for_video
from tests.media import make_video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=20)
    args = parser.parse_args()
    print(f"{args.uploads} uploads per row; milliseconds (upload answer, then until the video completed)\n")
    print(f"{'scope':<8}{'upload':<34}{'answer p50':>12}{'answer max':>12}{'done p50':>10}")
    for scope in ("owner", "global"):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            settings = make_settings(root, f"sqlite:///{root / 'bench.db'}", upload={"dedup_scope": scope})
            with running_server(settings) as server:
                clips = [make_video(root / f"c{i}.mp4", seed=1000 + i).read_bytes() for i in range(2 * args.uploads)]
                with server.client("alice") as alice:
                    for data in clips[args.uploads :]:  # alice's uploads, processed, before bob's
                        wait_for_video(alice, post_chunk(alice, data).json()["data"]["video_id"])
                rows: dict[str, tuple[list[float], list[float]]] = {
                    name: ([], []) for name in ("first upload (new bytes)", "another owner's bytes", "own bytes again")
                }
                with server.client("bob") as bob:
                    for index in range(args.uploads):
                        for name, data in (
                            ("first upload (new bytes)", clips[index]),
                            ("another owner's bytes", clips[args.uploads + index]),
                            ("own bytes again", clips[index]),
                        ):
                            started = time.perf_counter()
                            answer = post_chunk(bob, data, filename="b.mp4")
                            rows[name][0].append((time.perf_counter() - started) * 1000)
                            wait_for_video(bob, answer.json()["data"]["video_id"])
                            rows[name][1].append((time.perf_counter() - started) * 1000)
                for name, (answers, done) in rows.items():
                    print(
                        f"{scope:<8}{name:<34}{statistics.median(answers):>12.1f}{max(answers):>12.1f}"
                        f"{statistics.median(done):>10.1f}"
                    )


if __name__ == "__main__":
    main()
