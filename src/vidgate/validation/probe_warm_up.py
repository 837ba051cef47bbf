"""The warm probe server's warm-up: imported there as one of its preloaded modules (see
:mod:`vidgate.validation.pipeline`) and nowhere else, since importing it probes.

It probes the trusted clips shipped beside it (``warm_up/``, made by
:func:`vidgate.validation.probe.make_warm_up_samples`) once, so every child forked from the
server (each probe, the analysis child) starts with FFmpeg's lazy set-up done and the pages it
touched present. Each spare child used to warm up alone while it waited: ~9 ms of CPU per
upload, measured (issue 17); it now only probes the clips again to copy the pages a probe
writes (~3 ms, see ``probe.probe_on_request``). The clips are decoded
on this thread alone: a fork copies only the forking thread, and glibc keeps the stacks of
threads that ended mapped (FFmpeg's two decoding threads left 16 MiB more address space in every
child, which counts against its RLIMIT_AS).
"""

from __future__ import annotations

import contextlib
import gc
from pathlib import Path

from vidgate.validation.probe import probe, warm_up_clips


def _warm_up() -> tuple[str, ...]:
    """Probe every shipped clip; the names of those that probed clean."""
    probed = []
    for clip in warm_up_clips():
        with contextlib.suppress(Exception):  # an FFmpeg without this decoder: that clip warms nothing
            if "error" not in probe(str(clip), 64, 64, 60.0, threads=1):
                probed.append(clip.name)
    gc.collect()  # the clips' containers and codec contexts freed before the server forks
    return tuple(probed)


#: the clips this server probed clean
WARMED = _warm_up()
#: this server's threads once warmed up: a fork copies only the forking thread, so it must be 1
_TASKS = Path("/proc/self/task")
THREADS = len(list(_TASKS.iterdir())) if _TASKS.is_dir() else 1
