"""read -> plan -> apply: the one path that `plan`, `up` and `down` share."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ovsnvgre.desired import ROLE_TEP, HostState, desired_state
from ovsnvgre.errors import SystemFailure, UsageError
from ovsnvgre.fabric import Fabric
from ovsnvgre.flows import desired_flows
from ovsnvgre.plan import (
    FlowChanges,
    KernelState,
    Plan,
    PortCreate,
    SwitchState,
    diff_flows,
    is_owned,
    links_to_read,
    make_plan,
    with_flows,
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
    flow_mods: int = 0
    refused: dict[str, str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.ovsdb_writes or self.kernel_changes or self.flow_mods)


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
        progress(f"reading {switch.remote}, the kernel and the flows")
        actual, kernel = _read(desired, switch)
        the_plan = make_plan(desired, actual, kernel, removing=removing)
        # Ports `up` would create are expected to come up; ports ovs-vswitchd
        # refuses now get no flows.
        refused = actual.interfaces.only(set(desired.ports)).refused()
        live = {name for name in desired.ports if name not in refused}
        return with_flows(the_plan, _flow_changes(desired, actual, live, removing))


def _integration_bridge(desired: HostState, actual: SwitchState) -> str | None:
    """The integration bridge if it exists and is ovsnvgre's, else None."""
    name = desired.fabric.overlay.bridge
    bridge = actual.bridges.get(name)
    if bridge is None or not is_owned(bridge.external_ids, desired.owner):
        return None
    return name


def _flow_changes(desired: HostState, actual: SwitchState, live: set[str],
                  removing: bool) -> FlowChanges:
    from ovsnvgre import openflow

    name = desired.fabric.overlay.bridge
    bridge = _integration_bridge(desired, actual)
    installed = openflow.dump(bridge) if bridge else set()
    wanted = set() if removing else desired_flows(desired, live)
    return diff_flows(name, wanted, installed)


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
    from ovsnvgre import netlink, openflow
    from ovsnvgre.ovsdb import Switch

    desired = desired_state(fabric, host)
    with Switch(db, timeout) as switch:
        progress(f"reading {switch.remote} and the kernel")
        actual, kernel = _read(desired, switch)
        the_plan = make_plan(desired, actual, kernel, removing=removing)
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
        # The flows name ports, so they are planned once the ports exist.
        wanted = set() if removing else set(desired.ports)
        if writes:
            actual = switch.read()
            status = switch.port_status(wanted, wait=5.0)
        else:
            status = actual.interfaces.only(wanted)
        flow_changes = _flow_changes(desired, actual, status.live(), removing)
        the_plan = with_flows(the_plan, flow_changes)
        flow_mods = 0
        if flow_changes:
            progress(f"applying {len(flow_changes.add) + len(flow_changes.delete)} flow "
                     "changes in one bundle")
            flow_mods = openflow.apply(flow_changes.bridge, flow_changes.add,
                                       flow_changes.delete)
        refused = status.refused()
    result = RunResult(the_plan, writes, kernel_changes, flow_mods, refused)
    if refused:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in sorted(refused.items()))
        raise RefusedPorts(result, f"ovs-vswitchd refused {len(refused)} port(s): {reasons}")
    return result


class RefusedPorts(SystemFailure):
    def __init__(self, result: RunResult, message: str) -> None:
        super().__init__(message)
        self.result = result
