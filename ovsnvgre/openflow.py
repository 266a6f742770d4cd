"""ovs-ofctl: read the flows ovsnvgre owns on a bridge, change them in one bundle."""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from collections.abc import Iterable

from ovsnvgre.errors import SystemFailure
from ovsnvgre.flows import COOKIE, Flow

OFCTL = ("ovs-ofctl", "-O", "OpenFlow13")


log = logging.getLogger(__name__)


def _run(*args: str) -> str:
    log.debug("running %s", " ".join([*OFCTL, *args]))
    try:
        result = subprocess.run([*OFCTL, *args], capture_output=True, text=True, timeout=120)
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


def parse_flow(line: str) -> Flow | None:
    """One line of `dump-flows --no-stats --names`, or None for headers.

    ovs-ofctl quotes port names that hold characters like '-'; it reads them back
    unquoted too, and port names never hold a quote, so quotes are dropped.
    """
    line = line.strip().replace('"', "")
    if " actions=" not in line:
        return None
    head, actions = line.split(" actions=", 1)
    table, priority = 0, 32768
    match: set[str] = set()
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
            match.add(token)
    return Flow(table, priority, frozenset(match), actions)


def dump(bridge: str) -> set[Flow]:
    out = _run("--no-stats", "--names", "dump-flows", bridge, f"cookie={COOKIE:#x}/-1")
    return {flow for flow in map(parse_flow, out.splitlines()) if flow is not None}


def trace(bridge: str, flow: str) -> str:
    """`ovs-appctl ofproto/trace`: what the switch would do with one packet."""
    try:
        result = subprocess.run(["ovs-appctl", "ofproto/trace", bridge, flow],
                                capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise SystemFailure("ovs-appctl not found (install openvswitch-switch)") from None
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["failed"])[-1]
        raise SystemFailure(f"ovs-appctl ofproto/trace {bridge}: {reason}")
    return result.stdout


def apply(bridge: str, add: Iterable[Flow], delete: Iterable[Flow]) -> int:
    """Deletions and additions as one atomic bundle; returns the number of flow-mods."""
    lines = [f.delete_line() for f in sorted(delete, key=str)]
    lines += [f.add_line() for f in sorted(add, key=str)]
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
