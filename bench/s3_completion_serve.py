"""`vidgate serve` with timing wrappers around the steps of a completion on S3, for
bench/s3_completion.py: each call of a wrapped method prints ``BENCH-STEP <name>
<seconds>``. Works with any version of the sources (a method it does not find is skipped)."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from typing import Any


def _timed(owner: type, method: str, name: str | None = None) -> None:
    original: Callable[..., Any] | None = getattr(owner, method, None)
    if original is None:
        return
    label = name or method

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            step = label
            if method == "remove":
                step = "remove-background" if kwargs.get("later") else "remove-on-answer"
            print(f"BENCH-STEP {step} {time.perf_counter() - started:.4f}", flush=True)

    setattr(owner, method, wrapper)


def main() -> None:
    from vidgate.storage.s3_parts import S3PartStore
    from vidgate.validation.pipeline import FileValidator

    for method in ("assemble", "adopt", "part_path", "store"):
        _timed(S3PartStore, method)
    _timed(FileValidator, "validate")
    if hasattr(S3PartStore, "_remove"):  # off the answer: time the work itself, in its thread
        _timed(S3PartStore, "_remove", "remove-background")
    else:
        _timed(S3PartStore, "remove")
    from vidgate.cli import app

    app(["serve", *sys.argv[1:]])


if __name__ == "__main__":
    main()
