"""How many malloc arenas a vidgate process and the processes it starts may use (glibc).

glibc gives each thread that contends for the heap an arena of its own, up to 8 per core. The
API's request threads and the probe and analysis children each spread their small allocations
over them and fault in more pages. Measured under 64 clients uploading 4 MiB files (issue 17,
``bench/ingest.py --many-clients --only single``): with 2 arenas the server's whole tree spent
63-68 ms of CPU per upload against 77-83 with glibc's default, and took ~20 % more uploads/s.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h
ENVIRONMENT = "MALLOC_ARENA_MAX"  # read by glibc when a process starts: the children it starts


def limit_malloc_arenas(count: int) -> bool:
    """Cap this process's arenas at ``count`` and hand the cap to every process it starts
    afterwards (0: glibc's own rule). An operator's own ``MALLOC_ARENA_MAX`` wins. False where
    the C library is not glibc, which has no such knob."""
    if count <= 0 or ENVIRONMENT in os.environ:
        return False
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    if mallopt(M_ARENA_MAX, count) != 1:
        return False
    os.environ[ENVIRONMENT] = str(count)
    return True
