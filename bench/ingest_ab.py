"""bench/ingest.py with "before" rows: vidgate's S3 rows once more, their server run from another
checkout's sources, so that a change is measured before and after in the same run (interleaved,
the same machine state), next to the ceilings.

    git archive BASE src | tar -x -C /tmp/before
    .venv/bin/python bench/ingest_ab.py --before-src /tmp/before/src [ingest.py's options]

Adds ``tus-s3-before`` and ``chunked1-s3-before`` (give them in --only like any row). Every vidgate
S3 row, before and after, runs with UPLOAD_LOCKS=redis, so that a change of the lock default
does not differ between them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import ingest


def main() -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--before-src", type=Path, required=True)
    known, rest = parser.parse_known_args()
    before_src = str(known.before_src.resolve())
    before_kind = "vidgate-s3-before"
    ingest.VIDGATE_S3 = (*ingest.VIDGATE_S3, before_kind)
    at = next(i for i, case in enumerate(ingest.CASES) if case.key == "tus-s3") + 1
    ingest.CASES[at:at] = [
        ingest.Case("tus-s3-before", "S3: vidgate tus, before", before_kind, "tus"),
        ingest.Case("chunked1-s3-before", "S3: vidgate chunked x1, before", before_kind, "chunked x1"),
    ]
    original = ingest.prepare

    def prepare(kind: str, workdir: Path, port: int) -> ingest.Launch:
        launch = original("vidgate-s3" if kind == before_kind else kind, workdir, port)
        if kind in ingest.VIDGATE_S3:
            launch.env["UPLOAD_LOCKS"] = "redis"
        if kind == before_kind:
            launch.env["PYTHONPATH"] = before_src
        return launch

    ingest.prepare = prepare
    sys.argv = [sys.argv[0], *rest]
    ingest.main()


if __name__ == "__main__":
    main()
