"""How many malloc arenas ``vidgate serve`` and the processes it starts may use (glibc).

glibc gives each thread that contends for the heap an arena of its own, up to 8 per core. The
API's request threads and the probe and analysis children spread their small allocations over
them and fault in more pages. glibc reads ``MALLOC_ARENA_MAX`` once, when a process starts (set
later, by ``mallopt``, it was measured to change nothing: most arenas exist by then), so the cap
travels in the environment: ``serve`` re-executes itself with it (see ``cli._run_as_module``)
and every child inherits it. Measured under 64 clients uploading 4 MiB files (issue 17,
``bench/ingest.py --many-clients``): the server's process tree ~100 MiB smaller at the end and
the API's peak ~15 MiB lower, uploads/s unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

ENVIRONMENT = "MALLOC_ARENA_MAX"  # read by glibc when a process starts


def arena_environment(count: int, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The variables a process must start with to use at most ``count`` arenas: none when
    ``count`` is 0 (glibc's own rule) or the operator set ``MALLOC_ARENA_MAX`` already (theirs wins)."""
    if count <= 0 or ENVIRONMENT in environ:
        return {}
    return {ENVIRONMENT: str(count)}
