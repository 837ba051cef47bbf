"""The README lists every setting and every error code, and nothing that does not exist."""

from __future__ import annotations

import re
from pathlib import Path

from vidgate.config import all_env_names
from vidgate.errors import all_error_classes

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def section(title: str) -> str:
    """The README's text under ``## title`` up to the next ``## `` heading."""
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def test_every_setting_is_documented() -> None:
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", section("Settings"), flags=re.MULTILINE))
    assert documented == set(all_env_names())


def test_every_error_code_is_documented() -> None:
    documented = {(int(s), c) for s, c in re.findall(r"^\| (\d{3}) \| `([a-z_]+)` \|", README, flags=re.MULTILINE)}
    assert documented == {(cls.status, cls.code) for cls in all_error_classes()}
