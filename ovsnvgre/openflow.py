"""ovs-ofctl: read the flows ovsnvgre owns on a bridge, change them in one bundle."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable

from ovsnvgre.errors import SystemFailure
from ovsnvgre.pipeline import COOKIE, Flow

OFCTL = ("ovs-ofctl", "-O", "OpenFlow13")


log = logging.getLogger(__name__)


def _run(*args: str) -> str:
    """ovs-ofctl -O OpenFlow13 with ``args``: its output, or SystemFailure with its reason."""
    log.debug("running %s", " ".join([*OFCTL, *args]))
    try:
        result = subprocess.run([*OFCTL, *args], capture_output=True, text=True, timeout=120)  # noqa: S603 - a fixed argv, no shell, no user-supplied program
    except FileNotFoundError:
        raise SystemFailure("ovs-ofctl not found (install openvswitch-switch)") from None
    except subprocess.TimeoutExpired:
        raise SystemFailure(f"ovs-ofctl {args[0]} did not finish within 120 s") from None
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["failed"])[-1]
        words = [arg for arg in args if not arg.startswith("-")][:2]
        raise SystemFailure(f"ovs-ofctl {' '.join(words)}: "
                            f"{reason.removeprefix('ovs-ofctl: ')}")
    return result.stdout


# The form every flow ovsnvgre installs dumps in: cookie, table (absent for 0),
# priority, then the match fields with no spaces.  Anything else takes the general path.
_CANONICAL = re.compile(r"cookie=0x[0-9a-f]+, (?:table=(\d+), )?priority=(\d+)(?:,([^ ]*))?$")


def parse_flow(line: str) -> Flow | None:
    """One line of `dump-flows --no-stats --names`, or None for headers.

    ovs-ofctl quotes port names that hold characters like '-'; it reads them back
    unquoted too, and port names never hold a quote, so quotes are dropped.
    """
    line = line.strip().replace('"', "")
    head, found, actions = line.partition(" actions=")
    if not found:
        return None
    canonical = _CANONICAL.match(head)
    if canonical:
        table, priority, match = canonical.groups()
        return Flow(int(table or 0), int(priority),
                    frozenset(match.split(",")) if match else frozenset(), actions)
    table, priority = 0, 32768
    tokens: set[str] = set()
    for token in head.replace(", ", ",").split(","):
        if not token:
            continue
        name, _, value = token.partition("=")
        if name == "cookie":
            continue
        if name == "table":
            table = int(value)
        elif name == "priority":
            priority = int(value)
        else:
            tokens.add(token)
    return Flow(table, priority, frozenset(tokens), actions)


def dump(bridge: str) -> set[Flow]:
    """The flows with ovsnvgre's cookie on ``bridge``; raises SystemFailure."""
    out = _run("--no-stats", "--names", "dump-flows", bridge, f"cookie={COOKIE:#x}/-1")
    return {flow for flow in map(parse_flow, out.splitlines()) if flow is not None}


def trace(bridge: str, flow: str) -> str:
    """`ovs-appctl ofproto/trace BRIDGE FLOW`: what the switch would do with one packet,
    as OVS prints it; raises SystemFailure."""
    try:
        result = subprocess.run(["ovs-appctl", "ofproto/trace", bridge, flow],  # noqa: S603, S607 - a fixed argv, no shell, no user-supplied program; OVS and iproute2 tools are found on PATH, as OVS's own scripts find them
                                capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise SystemFailure("ovs-appctl not found (install openvswitch-switch)") from None
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["failed"])[-1]
        raise SystemFailure(f"ovs-appctl ofproto/trace {bridge}: {reason}")
    return result.stdout


def apply(bridge: str, add: Iterable[Flow], delete: Iterable[Flow]) -> int:
    """Deletions and additions as one atomic bundle (`ovs-ofctl --bundle add-flows`);
    returns the number of flow-mods; raises SystemFailure, leaving the flows as they were."""
    # Sorted only so that the file reads the same for the same change.
    lines = sorted(f.delete_line() for f in delete)
    lines += sorted(f.add_line() for f in add)
    if not lines:
        return 0
    with tempfile.NamedTemporaryFile("w", prefix="ovsnvgre-flows-", suffix=".txt",
                                     delete=False) as handle:
        handle.write("\n".join(lines) + "\n")
    try:
        _run("--bundle", "add-flows", bridge, handle.name)
    finally:
        os.unlink(handle.name)
    return len(lines)
