"""The README lists every setting and every error code, and nothing that does not exist; its
command lines name only commands, flags and files that a fresh clone has."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from vidgate.cli import app
from vidgate.config import all_env_names
from vidgate.errors import all_error_classes

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
ACTIVATE = "source .venv/bin/activate"


def section(title: str) -> str:
    """The README's text under ``## title`` up to the next ``## `` heading."""
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def test_every_setting_is_documented() -> None:
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", section("Settings"), flags=re.MULTILINE))
    assert documented == set(all_env_names())


def test_every_error_code_is_documented() -> None:
    documented = {(int(s), c) for s, c in re.findall(r"^\| (\d{3}) \| `([a-z_]+)` \|", README, flags=re.MULTILINE)}
    assert documented == {(cls.status, cls.code) for cls in all_error_classes()}


def shell_lines(text: str) -> list[str]:
    """The command lines of the ```bash blocks in ``text``, backslash continuations joined."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
        pending = ""
        for raw in block.splitlines():
            if raw.endswith("\\"):
                pending += raw[:-1] + " "
                continue
            if (pending + raw).strip():
                lines.append((pending + raw).strip())
            pending = ""
    return lines


def simple_commands(line: str) -> list[list[str]]:
    """The simple commands of one shell line (split at ``;``, ``|``, ``&&``, ``$(`` ...), each
    without its leading ``VAR=value`` assignments; comments and optional-part brackets dropped."""
    lexer = shlex.shlex(line.replace("[", "").replace("]", ""), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if set(token) <= set("();|&<>"):
            commands.append([])
        elif commands[-1] or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", token):
            commands[-1].append(token)
    return [command for command in commands if command]


def readme_commands() -> list[list[str]]:
    """Every simple command a user runs from the README's shell blocks, in order."""
    return [command for line in shell_lines(README) for command in simple_commands(line)]


def vidgate_invocations() -> list[list[str]]:
    """Each ``vidgate ...`` the README shows: in shell blocks, in inline code, and the flags that
    ``./scripts/serve`` passes on to ``vidgate serve``."""
    found = [command for command in readme_commands() if command[0] in ("vidgate", ".venv/bin/vidgate")]
    found += [c for c in readme_commands() if c[0] in ("./scripts/serve", "scripts/serve") and len(c) > 1]
    for span in re.findall(r"`((?:\./)?(?:scripts/serve|vidgate) [^`]+)`", README):
        found += simple_commands(span)
    return [["vidgate", "serve", *c[1:]] if c[0].endswith("scripts/serve") else ["vidgate", *c[1:]] for c in found]


def cli_problem(args: list[str]) -> str | None:
    """What is wrong with ``vidgate ARGS`` for the real CLI (an unknown command or option), or None."""
    command: Any = typer.main.get_command(app)  # typer's own click (typer._click in typer 0.2x)
    words = list(args)
    while hasattr(command, "commands"):  # a group
        if not words or words[0].startswith("-"):
            return f"`vidgate {' '.join(args)}` names no subcommand"
        name = words.pop(0)
        sub = command.commands.get(name)
        if sub is None:
            return f"`vidgate {' '.join(args)}`: the CLI has no command {name!r}"
        command = sub
    options = {"--help"} | {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    unknown = [word.split("=")[0] for word in words if word.startswith("-") and word.split("=")[0] not in options]
    if unknown:
        return f"`vidgate {' '.join(args)}`: {command.name} has no option {', '.join(unknown)}"
    return None


def test_readme_vidgate_commands_exist_with_their_flags() -> None:
    invocations = vidgate_invocations()
    assert len(invocations) >= 15, invocations  # the parser still finds the README's commands
    problems = [problem for args in invocations if (problem := cli_problem(args[1:]))]
    assert not problems


def test_cli_check_catches_what_the_cli_lacks() -> None:
    """The check above can fail: an unknown command, subcommand or flag is named."""
    assert cli_problem(["keys", "create", "--user", "a", "--label", "b"]) is None
    assert cli_problem(["upload", "clip.mp4", "--parallel", "4"]) is None
    assert cli_problem(["uplaod", "clip.mp4"]) is not None
    assert cli_problem(["keys", "rotate", "x"]) is not None
    assert cli_problem(["upload", "clip.mp4", "--paralel", "4"]) is not None
    assert cli_problem(["keys"]) is not None
    assert simple_commands("KEY=$(cat k); vidgate keys list [--all]  # note") == [
        ["cat", "k"],
        ["vidgate", "keys", "list", "--all"],
    ]


def test_readme_puts_vidgate_on_path_before_its_first_use() -> None:
    """After ``./scripts/serve`` nothing is on PATH: the README activates .venv (which the
    install makes with the ``vidgate`` script and ``activate`` in it) before its first bare
    ``vidgate`` command line."""
    lines = shell_lines(README)
    first_use = next(i for i, line in enumerate(lines) if any(c[0] == "vidgate" for c in simple_commands(line)))
    assert any(line.startswith(ACTIVATE) for line in lines[:first_use]), lines[: first_use + 1]
    assert (Path(sys.executable).parent / "vidgate").exists()
    assert (Path(sys.executable).parent / "activate").exists()


def tracked_files() -> dict[str, str]:
    """The repository's files as a fresh clone has them: path -> git mode."""
    try:
        listing = subprocess.run(["git", "ls-files", "-s"], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return {line.split("\t", 1)[1]: line.split()[0] for line in listing.stdout.splitlines()}


def test_readme_scripts_and_files_are_in_a_fresh_clone() -> None:
    """Every ``scripts/...`` the README runs is committed as an executable, with every file those
    scripts use (the lock, uv's pinned requirements); every ``.venv/bin/python FILE --flag`` names
    a committed script that has that flag."""
    tracked = tracked_files()
    scripts = {c[0].removeprefix("./") for c in readme_commands() if re.match(r"(\./)?scripts/", c[0])}
    assert {"scripts/serve", "scripts/test"} <= scripts
    needed = scripts | {"uv.lock", "pyproject.toml", ".ci/run"}
    todo = sorted(scripts | {".ci/run"})
    while todo:  # the scripts those scripts run, and the files they read
        script = ROOT / todo.pop()
        for path in re.findall(r"\bscripts/[\w.-]+", script.read_text() if script.is_file() else ""):
            if path not in needed:
                needed.add(path)
                todo.append(path)
    # a folder the scripts read (scripts/swift-conf) counts when files under it are committed
    missing = {path for path in needed if path not in tracked and not any(t.startswith(f"{path}/") for t in tracked)}
    assert not missing, "not committed"
    executables = {
        path for path in needed if path in tracked and path.startswith("scripts/") and not path.endswith(".txt")
    }
    assert {path for path in executables if tracked[path] != "100755"} == set(), "not executable in a clone"
    for command in readme_commands():
        if command[0] == ".venv/bin/python":
            source = (ROOT / command[1]).read_text()
            assert command[1] in tracked
            for flag in (word for word in command[2:] if word.startswith("--")):
                assert f'"{flag}"' in source, (command, flag)
