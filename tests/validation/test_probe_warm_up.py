"""The warm probe server warms up once, before it forks: every child starts warmed up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from vidgate.validation import pipeline
from vidgate.validation import probe as probe_module


def test_the_shipped_clips_are_one_per_warm_up_container_and_probe_clean() -> None:
    names = [path.name for path in probe_module.warm_up_clips()]
    assert names == sorted(f"warm-up.{extension}" for _, extension in probe_module.WARM_UP_SAMPLES)
    for path in probe_module.warm_up_clips():
        result = probe_module.probe(str(path), 64, 64, 60.0)
        assert "error" not in result and (result["width"], result["codec"]) == (64, "h264"), result


def test_children_are_forked_from_a_server_that_probed_every_clip_and_kept_one_thread() -> None:
    """What a child of the server sees of it: the clips it probed (all of them) and its threads
    after the warm-up (one: a fork copies only the forking thread, so FFmpeg's decoding threads
    must have ended first). ``warm_up_probes`` checks the same at start-up."""
    pipeline.warm_up_probes()
    answers, child_end = pipeline._WARM.Pipe(duplex=False)
    child = pipeline._WARM.Process(target=probe_module.report_warm_up, args=(child_end,), daemon=True)
    child.start()
    child_end.close()
    assert answers.poll(60)
    warmed, threads = answers.recv()
    child.join(timeout=10)
    assert sorted(warmed) == [path.name for path in probe_module.warm_up_clips()]
    assert threads == 1


def test_every_spare_is_given_every_shipped_clip_to_touch() -> None:
    assert [Path(clip) for clip in pipeline._TOUCH_CLIPS] == sorted(probe_module.WARM_UP_CLIPS.iterdir())


def test_the_server_imports_only_pyav_and_the_probe() -> None:
    """What the warm server preloads is what every probe child is forked with: importing the
    probe (and its package) must not bring settings or pydantic (23 MiB of a 55 MiB server)."""
    code = (
        "import json, sys, av, vidgate.validation.probe\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('vidgate', 'pydantic', 'numpy'))))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(found.stdout) == ["vidgate", "vidgate.validation", "vidgate.validation.probe"]
