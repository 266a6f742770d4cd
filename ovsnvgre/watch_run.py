"""One incremental run of `ovsnvgre watch`: a few VMs or a few integration-bridge ports
changed, and only their rows and flows are read and written.

Where `up` reads the whole switch, dumps every flow and computes the whole pipeline,
this run starts from what watch keeps (incremental.Model: the last run's desired
rows, live ports and flows) and reads only the rows the change names, each selected
by name; its changes go in one ovsdbapp transaction (ovsdb/switch.py, as `up`'s, on
the watch monitor's connection) and one bundle, under the host's lock, as `up`'s do;
the flow monitor is told which flow events that bundle will cause (it is not a
change to repair).

It declines (returns None, nothing changed) whenever the change reaches beyond the
integration bridge's VM and tunnel ports: a row of the underlay, the tep port, the
uplink or a bridge drifted, or a port it reads is not where the fabric puts it.
Then watch runs the full convergence (engine.up), which owns the rollback state,
the underlay check and the kernel.  Nothing this run changes touches the underlay,
so it needs neither: each of its two steps (the rows, the flows) is atomic, and a
run that fails between them leaves a VM port without flows (its traffic dropped by
the pipeline's default), which the full run that watch retries with completes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

from ovsnvgre import handles, openflow
from ovsnvgre.actual import ActualKernel, ActualPort, PortStatus
from ovsnvgre.changes import (
    FlowChanges,
    OvsdbChange,
    Plan,
    PortCreate,
    PortDelete,
    PortUpdate,
)
from ovsnvgre.desired import ROLE_KEY, DesiredHost, Role
from ovsnvgre.flowmonitor import FlowMonitor
from ovsnvgre.incremental import Model, next_desired
from ovsnvgre.model import Fabric
from ovsnvgre.ovsdb import Switch
from ovsnvgre.ovsdb.monitor import Monitor
from ovsnvgre.plan import diff_rows, handle_candidates, is_owned, reattach, with_flows
from ovsnvgre.safe import journal
from ovsnvgre.safe.lock import HostLock

log = logging.getLogger(__name__)

OVERLAY_ROLES = {Role.VM.value, Role.TUNNEL.value, Role.TUNNEL_RECEIVE.value,
                 Role.TUNNEL_FLOW.value}
PORT_WAIT = 5.0  # seconds ovs-vswitchd has to give a new port its OpenFlow number
MAX_ROWS = 256   # more named rows than this: the full run reads them faster


@dataclass(frozen=True)
class Outcome:
    """What an incremental run did: the next Model, the plan it applied (rows and flows),
    the writes, and the state of the ports it read (OpenFlow number, error)."""

    model: Model
    plan: Plan
    ovsdb_writes: int = 0
    flow_mods: int = 0
    status: PortStatus = field(default_factory=PortStatus)

    @property
    def changed(self) -> bool:
        """Whether the run wrote anything."""
        return bool(self.ovsdb_writes or self.flow_mods)


def _overlay_only(desired: DesiredHost, names: set[str], actual: dict[str, ActualPort]) -> bool:
    """Whether every port of ``names`` is, in the fabric and on the switch, a VM or tunnel
    port of the integration bridge (or absent)."""
    bridge = desired.fabric.overlay.bridge
    for name in names:
        if name in desired.bridges or name == desired.tep_port or name == desired.uplink:
            return False
        spec = desired.ports.get(name)
        if spec is not None and spec.role not in OVERLAY_ROLES:
            return False
        have = actual.get(name)
        if have is None:
            continue
        if have.bridge not in (None, bridge) and (spec is not None or is_owned(
                have.external_ids, desired.owner)):
            return False
        if is_owned(have.external_ids, desired.owner) and \
                have.external_ids.get(ROLE_KEY) not in OVERLAY_ROLES:
            return False
    return True


def _row_changes(desired: DesiredHost, names: set[str], switch: Switch,
                 check_handles: set[str]) -> tuple[list[OvsdbChange], list[str],
                                                   PortStatus] | None:
    """The OVSDB changes that make the ports ``names`` what ``desired`` says, the notes,
    and their OpenFlow numbers now; None when the change reaches beyond them."""
    actual = switch.read(names)
    if not _overlay_only(desired, names, actual.ports):
        return None
    wanted = {name: desired.ports[name] for name in names if name in desired.ports}
    changes, notes = diff_rows(desired.owner, desired.bridges, wanted, actual)
    if any(not isinstance(change, PortCreate | PortUpdate | PortDelete) for change in changes):
        return None  # a bridge drifted: the full run repairs it
    few = replace(desired, ports=wanted)
    candidates = handle_candidates(few, actual) & check_handles
    if candidates:
        found = handles.check(candidates, switch.remote)
        if found.stale:
            changes, more = reattach(few, actual, ActualKernel(links={}, stale=found.stale),
                                     changes)
            notes += more
    return changes, notes, actual.interfaces


def _bundle(flows: FlowMonitor, changes: FlowChanges) -> int:
    """Apply ``changes`` in one bundle, their flow events expected; the flow-mods made."""
    if not changes:
        return 0
    flows.expect(changes.add, changes.delete)
    return openflow.apply(changes.bridge, changes.add, changes.delete)


def run(model: Model, fabric: Fabric, changed: set[str], dirty: set[str], monitor: Monitor,
        flows: FlowMonitor, remote: str, timeout: float) -> Outcome | None:
    """Take the host from ``model`` to ``fabric`` (whose VMs ``changed`` are all that
    differs from the model's: incremental.vm_changes), reading again the ports ``dirty``
    (row events named them).  Returns None when only the full run is right (nothing was
    changed then); raises SystemFailure when a step fails."""
    desired = next_desired(model.desired, fabric, changed) if changed else \
        replace(model.desired, fabric=fabric)
    before, after = model.desired.ports, desired.ports
    names = set(dirty) | (before.keys() ^ after.keys())
    if before is not after:
        names |= {name for name, spec in after.items()
                  if (was := before.get(name)) is not spec and was != spec}
    if len(names) > MAX_ROWS:
        return None
    with Switch(remote, timeout, api=monitor.api()) as switch:
        return _apply(model, fabric, changed, desired, names, set(dirty), switch, flows)


def _apply(model: Model, fabric: Fabric, changed: set[str], desired: DesiredHost,
           names: set[str], dirty: set[str], switch: Switch, flows: FlowMonitor
           ) -> Outcome | None:
    """run's reads and writes, through ``switch``."""
    found = _row_changes(desired, names, switch, dirty)
    if found is None:
        return None
    changes, notes, status = found
    wanted = set(desired.ports)
    deleted = {change.name for change in changes if isinstance(change, PortDelete)}
    if deleted & wanted or deleted and any(isinstance(change, PortCreate)
                                           for change in changes):
        # A port made again gets another OpenFlow number, and the flows installed for
        # the old one name that number: the full run's dump finds and replaces them.
        return None
    log.debug("incremental run: %d VMs changed, %d rows read, %d OVSDB changes",
              len(changed), len(names), len(changes))
    kept = {name for name in model.live if name in wanted and name not in names}
    writes = flow_mods = 0
    path = journal.path_for(switch.remote)
    with HostLock(path.parent, "watch", switch.timeout):
        if path.exists():
            return None  # a run died with its rollback state: the full run takes it over
        if deleted:
            # Their flows go first, while ovs-ofctl still knows the ports' names.
            model, flow_changes = model.step(fabric, changed,
                                             kept | (names & wanted & status.live()), desired)
            flow_mods = _bundle(flows, flow_changes)
            writes = switch.apply(changes)
        else:
            if changes:
                began = time.monotonic()
                writes = switch.apply(changes)
                applied = time.monotonic()
                status = PortStatus({**status, **switch.port_status(names & wanted,
                                                                     PORT_WAIT)})
                log.debug("incremental run: transaction %.3f s, OpenFlow numbers %.3f s",
                          applied - began, time.monotonic() - applied)
            model, flow_changes = model.step(fabric, changed,
                                             kept | (names & wanted & status.live()), desired)
            flow_mods = _bundle(flows, flow_changes)
    plan = with_flows(Plan(host=desired.host.name, ovsdb=tuple(changes), notes=tuple(notes)),
                      flow_changes)
    return Outcome(model, plan, writes, flow_mods, status.only(names & wanted))
