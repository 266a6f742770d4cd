"""Running a command with a fixed argv: its output captured, one line when it fails.

The product's few commands that are not libraries (`ip netns`, `nft`) and the lab's
(`ip`, the OVS daemons, commands inside namespaces) run through ``run``.
"""

from __future__ import annotations

import subprocess

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
