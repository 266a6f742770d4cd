"""The lab's processes and namespaces: which exist, stopping a daemon by pid; ``run``
(ovsnvgre/process.py) runs its commands."""

from __future__ import annotations

import os
import signal
import time

from ovsnvgre.process import run


def namespaces() -> set[str]:
    """The names of the network namespaces (`ip netns list`)."""
    out = run("ip", "netns", "list").stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def link_exists(netns: str, name: str) -> bool:
    """Whether namespace ``netns`` has a link called ``name``."""
    return run("ip", "-n", netns, "link", "show", name, check=False).returncode == 0


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if the process is still there after ``timeout``."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
