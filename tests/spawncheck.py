"""The tests run the environment under test, never whatever `python3` PATH finds first.

On a fresh Debian 12 machine the system `python3` has no click: a test that spawns
`python3 -m ovsnvgre` (or `ovsnvgre` from PATH) fails there while passing where the
system Python happens to have the dependencies.  Two checks:

- ``audit``, an audit hook the suite installs (conftest.py): every process the test
  process starts (subprocess, os.exec*, os.posix_spawn, os.system) is looked at after
  its wrappers (``ip netns exec NS``, ``nsenter ...``, ``env ...``); a Python
  interpreter or ``ovsnvgre`` that is not in the directory of ``sys.executable`` is
  refused before it starts.
- ``scan``, for the code that a run does not reach (a test skipped here, bench/): the
  command lines written in tests/*.py and bench/*.py, read from their syntax trees.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

# A Python interpreter or the ovsnvgre command, by its file name.
STRAY = re.compile(r"^(python[0-9.]*|ovsnvgre)$")
# Functions whose positional arguments are a command line.
SPAWNERS = {"run", "Popen", "call", "check_call", "check_output", "exec", "sh", "execv",
            "execvp", "execve", "execl", "execlp", "spawnv", "spawnvp", "posix_spawn",
            "posix_spawnp", "create_subprocess_exec", "system"}


# The static scan skips a line that says this: a test of these checks spawning a
# stray program on purpose.
PRAGMA = "# spawncheck: stray on purpose"


class StraySpawn(AssertionError):
    """A test started a Python or ovsnvgre that is not the environment under test."""


def program(argv: Sequence[str | None]) -> str | None:
    """The program a command line runs once its wrappers are taken off (None: unknown)."""
    rest = list(argv)
    while rest:
        head = rest[0]
        name = os.path.basename(head) if head else head
        if name == "ip" and rest[1:3] == ["netns", "exec"]:
            rest = rest[4:]
        elif name in ("nsenter", "unshare", "setsid", "sudo", "env", "nice"):
            rest = rest[1:]
            while rest and rest[0] is not None and (rest[0].startswith("-") or
                                                     (name == "env" and "=" in rest[0])):
                rest = rest[1:]
        elif name == "timeout":
            rest = rest[2:]
        else:
            return head
    return None


def stray(argv: Sequence[str | None]) -> str | None:
    """The program of ``argv`` when it is a Python or ovsnvgre outside sys.executable's
    directory (a bare name, or another installation); else None."""
    found = program(argv)
    if found is None or not STRAY.match(os.path.basename(found)):
        return None
    here = Path(sys.executable).parent
    if os.path.isabs(found) and Path(found).parent == here:
        return None
    return found


def _argv(args: object) -> list[str | None]:
    if isinstance(args, (str, bytes, os.PathLike)):
        return [os.fsdecode(args)]
    argv = [os.fsdecode(a) if isinstance(a, (str, bytes, os.PathLike)) else None
            for a in args]  # type: ignore[union-attr]
    if len(argv) >= 3 and argv[1] == "-c" and argv[0] in ("/bin/sh", "sh") and argv[2]:
        return [*shlex.split(argv[2])]  # shell=True: the command's first word
    return argv


ACTIVE = [True]  # a test may switch the hook off (the hook itself cannot be removed)


def audit(event: str, args: tuple) -> None:
    """The audit hook: refuses to start a stray Python or ovsnvgre (StraySpawn)."""
    if not ACTIVE[0]:
        return
    if event == "subprocess.Popen":
        argv = _argv(args[1])
    elif event in ("os.exec", "os.posix_spawn"):
        argv = _argv(args[1])
    elif event == "os.spawn":
        argv = _argv(args[2])
    elif event == "os.system":
        argv = shlex.split(os.fsdecode(args[0]))
    else:
        return
    found = stray(argv)
    if found is not None:
        raise StraySpawn(f"a test started {found!r} ({' '.join(map(str, argv))}): use "
                         f"sys.executable ({sys.executable}) or the ovsnvgre next to it")


# --- the static scan -----------------------------------------------------------------


def _text(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):  # f"--net=/run/netns/{x}": its constant parts
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return None


def _commands(tree: ast.AST) -> Iterable[tuple[int, list[str | None]]]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.List, ast.Tuple)) and node.elts:
            yield node.lineno, [_text(e) for e in node.elts]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in SPAWNERS:
                argv = [_text(a) for a in node.args]
                if len(argv) == 1 and argv[0] and " " in argv[0]:  # a shell command
                    argv = [*shlex.split(argv[0])]
                yield node.lineno, argv


def scan_source(source: str, filename: str) -> list[str]:
    """``file:line: ...`` for each command line in ``source`` that runs a stray program."""
    found = []
    lines = source.splitlines()
    for line, argv in _commands(ast.parse(source, filename)):
        program_ = program(argv)
        if PRAGMA in lines[line - 1]:
            continue
        if program_ is not None and STRAY.match(os.path.basename(program_)):
            found.append(f"{filename}:{line}: runs {program_!r} from PATH: use sys.executable")
    return sorted(set(found))


def scan(paths: Iterable[Path]) -> list[str]:
    """``scan_source`` of every file in ``paths``."""
    return [problem for path in paths for problem in scan_source(path.read_text(), str(path))]
