"""read -> plan -> apply: the one path that `plan`, `up` and `down` share."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ovsnvgre.desired import ROLE_TEP, HostState, desired_state
from ovsnvgre.errors import SystemFailure, UsageError
from ovsnvgre.fabric import Fabric
from ovsnvgre.plan import (
    KernelState,
    Plan,
    PortCreate,
    SwitchState,
    links_to_read,
    make_plan,
)

Progress = Callable[[str], None]
DEFAULT_TIMEOUT = 30.0


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class RunResult:
    plan: Plan
    ovsdb_writes: int = 0
    kernel_changes: int = 0
    refused: dict[str, str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.ovsdb_writes or self.kernel_changes)


def select_host(fabric: Fabric, requested: str | None) -> str:
    """The host named by --host, or the one host of the fabric that is this machine."""
    if requested is not None:
        if requested not in fabric.hosts:
            raise UsageError(f"{fabric.source}: no host {requested!r} in the fabric "
                             f"(hosts: {', '.join(fabric.hosts)})")
        return requested
    from ovsnvgre import netlink

    local = netlink.local_addresses()
    names = {socket.gethostname(), socket.gethostname().split(".")[0]}
    matches = sorted(h.name for h in fabric.hosts.values() if h.pa.ip in local or h.name in names)
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UsageError(f"{fabric.source}: no host of the fabric matches this machine (no PA "
                         f"configured here, hostname {socket.gethostname()!r} not listed); "
                         f"pick one with --host ({', '.join(fabric.hosts)})")
    raise UsageError(f"{fabric.source}: several hosts match this machine "
                     f"({', '.join(matches)}); pick one with --host")


def _read(desired: HostState, switch: Any) -> tuple[SwitchState, KernelState]:
    from ovsnvgre import netlink

    actual = switch.read()
    return actual, netlink.read(links_to_read(desired, actual))


def plan(fabric: Fabric, host: str, db: str | None = None, removing: bool = False,
         progress: Progress = _quiet) -> Plan:
    from ovsnvgre.ovsdb import Switch

    desired = desired_state(fabric, host)
    with Switch(db) as switch:
        progress(f"reading {switch.remote} and the kernel")
        return make_plan(desired, *_read(desired, switch), removing=removing)


def up(fabric: Fabric, host: str, db: str | None = None, timeout: float = DEFAULT_TIMEOUT,
       progress: Progress = _quiet) -> RunResult:
    """Make the host match the fabric."""
    return _converge(fabric, host, db, False, timeout, progress)


def down(fabric: Fabric, host: str, db: str | None = None, timeout: float = DEFAULT_TIMEOUT,
         progress: Progress = _quiet) -> RunResult:
    """Remove every row ovsnvgre owns on this switch, and give the uplink back its addresses."""
    return _converge(fabric, host, db, True, timeout, progress)


def _converge(fabric: Fabric, host: str, db: str | None, removing: bool, timeout: float,
              progress: Progress) -> RunResult:
    from ovsnvgre import netlink
    from ovsnvgre.ovsdb import Switch

    desired = desired_state(fabric, host)
    with Switch(db, timeout) as switch:
        progress(f"reading {switch.remote} and the kernel")
        the_plan = make_plan(desired, *_read(desired, switch), removing=removing)
        writes = 0
        if the_plan.ovsdb:
            progress(f"applying {len(the_plan.ovsdb)} OVSDB changes in one transaction")
            writes = switch.apply(the_plan.ovsdb)
        kernel_changes = 0
        if the_plan.kernel:
            progress(f"applying {len(the_plan.kernel)} address, route and link changes")
            tep_created = any(isinstance(c, PortCreate) and c.spec.role == ROLE_TEP
                              for c in the_plan.ovsdb)
            kernel_changes = netlink.apply(the_plan.kernel,
                                           wait_for=[desired.tep_port] if tep_created else [])
        refused = {} if removing else switch.refused_ports(desired.ports)
    result = RunResult(the_plan, writes, kernel_changes, refused)
    if refused:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in sorted(refused.items()))
        raise RefusedPorts(result, f"ovs-vswitchd refused {len(refused)} port(s): {reasons}")
    return result


class RefusedPorts(SystemFailure):
    def __init__(self, result: RunResult, message: str) -> None:
        super().__init__(message)
        self.result = result
