"""ovs-ofctl: read the flows ovsnvgre owns on a bridge, change them in one bundle."""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ovsnvgre.errors import SystemFailure
from ovsnvgre.pipeline import COOKIE, Flow
from ovsnvgre.pipeline.flow import parse_dump_line

OFCTL = ("ovs-ofctl", "-O", "OpenFlow13")


log = logging.getLogger(__name__)


TIMEOUT = 120  # seconds any one ovs-ofctl may take


def _failure(args: tuple[str, ...], stderr: str) -> SystemFailure:
    reason = (stderr.strip().splitlines() or ["failed"])[-1]
    words = [arg for arg in args if not arg.startswith("-")][:2]
    return SystemFailure(f"ovs-ofctl {' '.join(words)}: {reason.removeprefix('ovs-ofctl: ')}")


def _run(*args: str) -> str:
    """ovs-ofctl -O OpenFlow13 with ``args``: its output, or SystemFailure with its reason."""
    log.debug("running %s", " ".join([*OFCTL, *args]))
    try:
        result = subprocess.run([*OFCTL, *args], capture_output=True, text=True,  # noqa: S603 - a fixed argv, no shell, no user-supplied program
                                timeout=TIMEOUT)
    except FileNotFoundError:
        raise SystemFailure("ovs-ofctl not found (install openvswitch-switch)") from None
    except subprocess.TimeoutExpired:
        raise SystemFailure(f"ovs-ofctl {args[0]} did not finish within {TIMEOUT} s") from None
    if result.returncode != 0:
        raise _failure(args, result.stderr)
    return result.stdout


def parse_flow(line: str) -> Flow | None:
    """One line of `dump-flows --no-stats --names`, or None for headers
    (pipeline.flow.parse_dump_line)."""
    return parse_dump_line(line)


@dataclass(frozen=True)
class FlowDump:
    """The flows with ovsnvgre's cookie on one bridge, each line as `ovs-ofctl
    --no-stats --names dump-flows` printed it, quotes dropped: for a flow ovsnvgre
    made, the very text of its ``Flow.dump_line``, so that comparing needs no parse."""

    lines: frozenset[str] = frozenset()

    def flows(self, known: Mapping[str, Flow] | None = None) -> set[Flow]:
        """The lines as Flow values: a line found in ``known`` (dump_line -> Flow, e.g.
        the desired flows) is that Flow, any other is parsed (parse_dump_line)."""
        known = known or {}
        flows = set()
        for line in self.lines:
            flow = known.get(line) or parse_dump_line(line)
            if flow is not None:
                flows.add(flow)
        return flows


class PendingDump:
    """`ovs-ofctl dump-flows` of ovsnvgre's flows on a bridge, running beside the caller
    (ovs-ofctl and ovs-vswitchd format the flows while this process reads the switch
    and computes the desired flows); ``result()`` waits for it.  Use it as a context
    manager: leaving the block stops a dump nobody waited for.

    Its output goes to an unlinked file: through a pipe, ovs-ofctl would stall each
    time the pipe filled until this process, busy elsewhere, read it.
    """

    def __init__(self, bridge: str) -> None:
        self.args = ("--no-stats", "--names", "dump-flows", bridge, f"cookie={COOKIE:#x}/-1")
        log.debug("running %s", " ".join([*OFCTL, *self.args]))
        self.out = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self.err = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        try:
            self.process = subprocess.Popen([*OFCTL, *self.args], stdout=self.out,  # noqa: S603 - a fixed argv, no shell, no user-supplied program
                                            stderr=self.err)
        except FileNotFoundError:
            self.close()
            raise SystemFailure("ovs-ofctl not found (install openvswitch-switch)") from None

    def __enter__(self) -> PendingDump:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def result(self) -> FlowDump:
        """The dump, once ovs-ofctl has finished; raises SystemFailure."""
        try:
            code = self.process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            raise SystemFailure(f"ovs-ofctl dump-flows did not finish within {TIMEOUT} s"
                                ) from None
        if code != 0:
            self.err.seek(0)
            raise _failure(self.args, self.err.read().decode(errors="replace"))
        self.out.seek(0)
        # One pass over the whole text in C: the quotes ovs-ofctl puts around port
        # names that hold a '-' (they never hold a quote themselves).  On the bytes,
        # so that no more than two copies of a dump (60 MB at 250,000 flows) live.
        text = self.out.read().replace(b'"', b"").decode()
        return FlowDump(frozenset(line for line in text.splitlines() if " actions=" in line))

    def close(self) -> None:
        """Stop ovs-ofctl if it still runs; drop its output."""
        process = getattr(self, "process", None)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self.out.close()
        self.err.close()


def dump_lines(bridge: str) -> FlowDump:
    """The flows with ovsnvgre's cookie on ``bridge``, as text; raises SystemFailure."""
    with PendingDump(bridge) as pending:
        return pending.result()


def dump(bridge: str) -> set[Flow]:
    """The flows with ovsnvgre's cookie on ``bridge``, parsed; raises SystemFailure."""
    return dump_lines(bridge).flows()


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
    # Not sorted: the bundle applies as one whatever the order, and sorting 250,000
    # lines (5,000 hosts) costs a quarter of a second for nothing.
    lines = [f.delete_line() for f in delete]
    lines += [f.add_line() for f in add]
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
