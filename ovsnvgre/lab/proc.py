"""Running the lab's commands: `ip`, the OVS daemons, commands inside namespaces."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from ovsnvgre.errors import SystemFailure


def run(*args: str, netns: str | None = None, env: dict[str, str] | None = None,
        check: bool = True, timeout: float = 60, cwd: str | None = None,
        stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run a command (in ``netns`` if given, from ``cwd`` if given, fed ``stdin`` if
    given), capturing its output; with ``check``, raise SystemFailure with its last
    error line when it fails.  ``timeout`` in seconds."""
    command = list(args)
    if netns:
        command = ["ip", "netns", "exec", netns, *command]
    try:
        result = subprocess.run(command, input=stdin, capture_output=True, text=True, env=env,  # noqa: S603 - a fixed argv, no shell, no user-supplied program
                                timeout=timeout, cwd=cwd)
    except FileNotFoundError:
        raise SystemFailure(f"{command[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise SystemFailure(f"{' '.join(command)} did not finish within {timeout:g} s") from None
    if check and result.returncode != 0:
        reason = (result.stderr.strip() or result.stdout.strip() or "failed").splitlines()[-1]
        raise SystemFailure(f"{' '.join(command)}: {reason}")
    return result


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
