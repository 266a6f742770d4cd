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
        raise _failure(args, result.stderr)
    return result.stdout


def _failure(args: tuple[str, ...], stderr: str) -> SystemFailure:
    reason = (stderr.strip().splitlines() or ["failed"])[-1]
    words = [arg for arg in args if not arg.startswith("-")][:2]
    return SystemFailure(f"ovs-ofctl {' '.join(words)}: {reason.removeprefix('ovs-ofctl: ')}")


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


class PendingDump:
    """A `dump-flows` of the owned flows running beside the caller's other work.

    Its output goes to an unnamed file, not a pipe: 10,000 flows are about 1 MB,
    and a writer blocked on a full pipe would not run ahead at all.
    """

    def __init__(self, bridge: str) -> None:
        self.args = ("--no-stats", "--names", "dump-flows", bridge, f"cookie={COOKIE:#x}/-1")
        log.debug("running %s", " ".join([*OFCTL, *self.args]))
        self._output = tempfile.TemporaryFile("w+")
        try:
            self._process = subprocess.Popen([*OFCTL, *self.args], stdout=self._output,
                                             stderr=subprocess.PIPE, text=True)
        except FileNotFoundError:
            self._output.close()
            raise SystemFailure("ovs-ofctl not found (install openvswitch-switch)") from None

    def result(self) -> set[Flow]:
        try:
            _, stderr = self._process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            self.cancel()
            raise SystemFailure("ovs-ofctl dump-flows did not finish within 120 s") from None
        with self._output:
            if self._process.returncode != 0:
                raise _failure(self.args, stderr)
            self._output.seek(0)
            return {flow for flow in map(parse_flow, self._output) if flow is not None}

    def cancel(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.communicate()
        self._output.close()


def dump(bridge: str) -> set[Flow]:
    return PendingDump(bridge).result()


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
