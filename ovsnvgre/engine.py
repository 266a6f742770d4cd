"""read -> plan -> apply: the one path that `plan`, `up` and `down` share."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ovsnvgre import snapshot
from ovsnvgre.desired import ROLE_TEP, HostState, desired_state
from ovsnvgre.errors import SystemFailure, UsageError
from ovsnvgre.fabric import Fabric
from ovsnvgre.flows import Flow, desired_flows
from ovsnvgre.plan import (
    BridgeDelete,
    KernelState,
    Plan,
    PortCreate,
    PortDelete,
    SwitchState,
    diff_flows,
    is_owned,
    links_to_read,
    make_plan,
    with_flows,
)
from ovsnvgre.status import Report
from ovsnvgre.verify import Check, touches_underlay
from ovsnvgre.verify import targets as underlay_targets

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
    check: Check | None = None
    # With --confirm: the process that rolls the run back unless it is confirmed.
    timer: Any = None

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
        return _survey(desired, switch, removing).plan


@dataclass(frozen=True)
class _Survey:
    actual: SwitchState
    kernel: KernelState
    installed: set[Flow]
    plan: Plan
    refused: dict[str, str]


def _survey(desired: HostState, switch: Any, removing: bool = False) -> _Survey:
    """Everything that differs from the fabric, changing nothing."""
    from ovsnvgre import openflow

    actual, kernel = _read(desired, switch)
    the_plan = make_plan(desired, actual, kernel, removing=removing)
    # Ports `up` would create are expected to come up; ports ovs-vswitchd
    # refuses now get no flows.
    refused = actual.interfaces.only(set(desired.ports)).refused()
    live = {name for name in desired.ports if name not in refused}
    bridge = _integration_bridge(desired, actual.bridge_external_ids())
    installed = openflow.dump(bridge) if bridge else set()
    wanted = set() if removing else desired_flows(desired, live)
    the_plan = with_flows(the_plan, diff_flows(desired.fabric.overlay.bridge, wanted, installed))
    pending = _pending_note(switch.remote)
    if pending:
        the_plan = replace(the_plan, notes=(*the_plan.notes, pending))
    return _Survey(actual, kernel, installed, the_plan, refused)


def status(fabric: Fabric, host: str, db: str | None = None,
           progress: Progress = _quiet) -> Report:
    """The host as it runs, and how it differs from the fabric."""
    from ovsnvgre import status as reports
    from ovsnvgre.ovsdb import Switch

    desired = desired_state(fabric, host)
    with Switch(db) as switch:
        progress(f"reading {switch.remote}, the kernel and the flows")
        survey = _survey(desired, switch)
        details = switch.interface_details(desired.ports)
    return reports.build(desired, details, survey.kernel, survey.installed, survey.plan,
                         survey.refused)


@dataclass(frozen=True)
class TraceResult:
    probe: Any
    verdict: str
    outputs: list[dict[str, Any]]
    raw: str

    def as_dict(self) -> dict[str, Any]:
        return {"host": self.probe.source.host, "from": self.probe.source.name,
                "to": self.probe.target,
                "destination": self.probe.destination.name if self.probe.destination else None,
                "proto": self.probe.proto, "flow": self.probe.flow, "verdict": self.verdict,
                "outputs": [{k: v for k, v in o.items() if k != "text"} for o in self.outputs]}


def trace(fabric: Fabric, source: str, target: str, proto: str = "icmp",
          host: str | None = None, db: str | None = None) -> TraceResult:
    """Trace a packet from a local VM through the integration bridge."""
    from ovsnvgre import openflow
    from ovsnvgre import trace as traces
    from ovsnvgre.ovsdb import Switch

    the_probe = traces.probe(fabric, source, target, proto)
    vm_host = the_probe.source.host
    if host is not None and host != vm_host:
        raise UsageError(f"{fabric.source}: VM {source} is on host {vm_host}, not {host}: "
                         "trace it there")
    desired = desired_state(fabric, vm_host)
    with Switch(db) as switch:
        actual = switch.read()
    if _integration_bridge(desired, actual.bridge_external_ids()) is None:
        raise SystemFailure(f"host {vm_host}: the integration bridge "
                            f"{fabric.overlay.bridge} is not set up: run `ovsnvgre up` first")
    bridge = actual.bridges[fabric.overlay.bridge]
    names = {ofport: name for name, (ofport, _) in actual.interfaces.items()
             if name in bridge.ports and ofport}
    raw = openflow.trace(fabric.overlay.bridge, the_probe.flow)
    parsed = traces.parse(raw, names)
    sentence, outputs = traces.verdict(desired, the_probe, parsed)
    return TraceResult(the_probe, sentence, outputs, raw)


def _integration_bridge(desired: HostState,
                        bridges: Mapping[str, Mapping[str, str]]) -> str | None:
    """The integration bridge if it exists and is ovsnvgre's, else None.

    ``bridges``: each bridge's external_ids, by name.
    """
    name = desired.fabric.overlay.bridge
    external_ids = bridges.get(name)
    if external_ids is None or not is_owned(external_ids, desired.owner):
        return None
    return name


def _pending_note(remote: str) -> str | None:
    from ovsnvgre import journal

    path = journal.path_for(remote)
    record = journal.load(path)
    if record is None:
        return None
    return (f"{path} holds the state before {record.describe()}; `up` will not run until "
            "`ovsnvgre confirm` or `ovsnvgre rollback`")


def up(fabric: Fabric, host: str, db: str | None = None, timeout: float = DEFAULT_TIMEOUT,
       progress: Progress = _quiet, verify: bool = True, confirm: float | None = None
       ) -> RunResult:
    """Make the host match the fabric."""
    return _converge(fabric, host, db, False, timeout, progress, verify, confirm)


def down(fabric: Fabric, host: str, db: str | None = None, timeout: float = DEFAULT_TIMEOUT,
         progress: Progress = _quiet, verify: bool = True, confirm: float | None = None
         ) -> RunResult:
    """Remove every row ovsnvgre owns on this switch, and give the uplink back its addresses."""
    return _converge(fabric, host, db, True, timeout, progress, verify, confirm)


def _converge(fabric: Fabric, host: str, db: str | None, removing: bool, timeout: float,
              progress: Progress, verify: bool, confirm: float | None) -> RunResult:
    from ovsnvgre import journal, netlink, openflow
    from ovsnvgre.ovsdb import Switch

    desired = desired_state(fabric, host)
    with Switch(db, timeout) as switch:
        path = journal.path_for(switch.remote)
        journal.refuse_pending(path)
        progress(f"reading {switch.remote} and the kernel")
        actual, kernel = _read(desired, switch)
        bridge = _integration_bridge(desired, actual.bridge_external_ids())
        installed = openflow.dump(bridge) if bridge else set()
        the_plan = make_plan(desired, actual, kernel, removing=removing)
        record: journal.Record | None = None

        def save_before_changing() -> journal.Record:
            nonlocal record
            if record is None:
                record = journal.Record(
                    command="down" if removing else "up", fabric=fabric.name, host=host,
                    db=switch.remote, pid=os.getpid(), started=time.time(),
                    snapshot=snapshot.take(desired.owner, host, actual, kernel,
                                           desired.fabric.overlay.bridge, installed))
                journal.save(path, record)
            return record

        try:
            check = None
            if verify and touches_underlay(desired, the_plan):
                targets = underlay_targets(desired, the_plan, removing)
                if targets:
                    progress("probing " + ", ".join(str(t.address) for t in targets)
                             + " before the change")
                    check = Check.start(targets)
            writes = 0
            if the_plan.ovsdb:
                save_before_changing()
                progress(f"applying {len(the_plan.ovsdb)} OVSDB changes in one transaction")
                writes = switch.apply(the_plan.ovsdb)
            kernel_changes = 0
            if the_plan.kernel:
                save_before_changing()
                progress(f"applying {len(the_plan.kernel)} address, route and link changes")
                tep_created = any(isinstance(c, PortCreate) and c.spec.role == ROLE_TEP
                                  for c in the_plan.ovsdb)
                kernel_changes = netlink.apply(the_plan.kernel,
                                               wait_for=[desired.tep_port] if tep_created else [])
            if check is not None:
                failures = check.finish()
                if failures:
                    assert record is not None
                    progress("the underlay check failed: restoring the state before the run")
                    what = f"host {host}: the underlay check failed after the change: " \
                           f"{'; '.join(failures)}"
                    try:
                        undone = restore(switch, record.snapshot, progress)
                    except SystemFailure as exc:
                        raise SystemFailure(f"{what}; restoring the state before the run failed "
                                            f"too ({exc}): it is kept in {path}, run `ovsnvgre "
                                            "rollback` once the cause is fixed") from exc
                    journal.remove(path)
                    overlay = "" if removing else "; the overlay was not applied"
                    raise UnderlayLost(f"{what}. Rolled back: the host is as it was before the "
                                       f"run ({undone} changes undone){overlay} (--no-verify "
                                       "skips this check)")
                progress("underlay check passed: " + "; ".join(check.lines())
                         + f" ({check.seconds:.2f} s)")
            # The flows name ports, so they are planned once the ports exist.
            wanted = set() if removing else set(desired.ports)
            if writes:
                status = switch.port_status(wanted, wait=5.0)
                bridge = _integration_bridge(desired, switch.bridge_external_ids())
                # Flows dumped before the change name ports by name; only a deleted
                # port (or bridge) changes how the installed flows read now.
                if bridge is None:
                    installed = set()
                elif any(isinstance(c, PortDelete | BridgeDelete) for c in the_plan.ovsdb):
                    installed = openflow.dump(bridge)
            else:
                status = actual.interfaces.only(wanted)
            flow_changes = diff_flows(desired.fabric.overlay.bridge,
                                      set() if removing else desired_flows(desired, status.live()),
                                      installed)
            the_plan = with_flows(the_plan, flow_changes)
            flow_mods = 0
            if flow_changes:
                save_before_changing()
                progress(f"applying {len(flow_changes.add) + len(flow_changes.delete)} flow "
                         "changes in one bundle")
                flow_mods = openflow.apply(flow_changes.bridge, flow_changes.add,
                                           flow_changes.delete)
            refused = status.refused()
            timer = None
            if record is not None:
                if confirm is None:
                    journal.remove(path)
                else:
                    timer = _start_timer(path, record, confirm)
        except SystemFailure as exc:
            if record is None or isinstance(exc, UnderlayLost) or not path.exists():
                raise
            raise SystemFailure(f"{exc}; the run stopped half-way: {path} holds the state "
                                "before it (`ovsnvgre rollback` returns to it, `ovsnvgre "
                                "confirm` keeps the host as it is)") from exc
    result = RunResult(the_plan, writes, kernel_changes, flow_mods, refused, check, timer)
    if refused:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in sorted(refused.items()))
        raise RefusedPorts(result, f"ovs-vswitchd refused {len(refused)} port(s): {reasons}")
    return result


def restore(switch: Any, snap: snapshot.Snapshot, progress: Progress = _quiet) -> int:
    """Put the owned rows, the links and the owned flows back as ``snap`` holds them."""
    from ovsnvgre import netlink, openflow

    count = 0
    rows = snapshot.restore_rows(snap, switch.read())
    if rows:
        progress(f"restoring {len(rows)} OVSDB rows in one transaction")
        count += switch.apply(rows)
    actual = switch.read()
    recreated = [name for name in snap.links if name in actual.ports
                 and actual.ports[name].iface_type == "internal"]
    netlink.wait_for_links(recreated)
    kernel_changes = snapshot.restore_kernel(snap, netlink.read(snap.links))
    if kernel_changes:
        progress(f"restoring {len(kernel_changes)} addresses, routes and link states")
        count += netlink.apply(kernel_changes)
    bridge = actual.bridges.get(snap.flow_bridge)
    if bridge is not None and is_owned(bridge.external_ids, snap.owner):
        switch.port_status(snap.port_names(), wait=5.0)
        flows = snapshot.restore_flows(snap, openflow.dump(snap.flow_bridge))
        if flows:
            progress(f"restoring {len(flows.add) + len(flows.delete)} flows in one bundle")
            count += openflow.apply(flows.bridge, flows.add, flows.delete)
    return count


def _start_timer(path: Any, record: Any, seconds: float) -> Any:
    """A detached process that rolls the run back unless `ovsnvgre confirm` comes first.

    It runs in its own session and ignores SIGHUP, so it outlives the shell (and the
    SSH connection) that ran `up`; it logs beside the rollback file.
    """
    import secrets
    import subprocess
    import sys

    from ovsnvgre import journal

    record.state = journal.AWAITING
    record.deadline = time.time() + seconds
    record.token = secrets.token_hex(8)
    journal.save(path, record)
    log = open(journal.log_path(path), "a")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen([sys.executable, "-m", "ovsnvgre.confirm_timer", str(path),
                                 record.token], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                close_fds=True)
    finally:
        log.close()


@dataclass(frozen=True)
class Confirmation:
    confirmed: bool
    detail: str


def await_confirmation(timer: Any, seconds: float) -> Confirmation:
    """Wait for the timer of ``up --confirm``: it ends on `ovsnvgre confirm` or its deadline."""
    from ovsnvgre.confirm_timer import CONFIRMED, ROLLED_BACK

    code = timer.wait(timeout=seconds + 120)
    if code == CONFIRMED:
        return Confirmation(True, "confirmed: the change stays")
    if code == ROLLED_BACK:
        return Confirmation(False, "not confirmed in time: rolled back to the state before "
                                   "the run")
    raise SystemFailure("not confirmed in time, and the rollback failed: see "
                        "ovsnvgre-rollback.log in the OVS run directory, then run "
                        "`ovsnvgre rollback`")


def confirm(db: str | None = None) -> str:
    """Keep what a run changed: drop its rollback state (and so stop its timer)."""
    from ovsnvgre import journal
    from ovsnvgre.ovsdb import default_remote

    path = journal.path_for(db or default_remote())
    record = journal.load(path)
    if record is None:
        if journal.load(journal.taken_path(path)) is not None:
            raise SystemFailure("too late: the rollback has already started")
        raise SystemFailure(f"nothing to confirm: no rollback state in {path}")
    if record.still_applying():
        raise SystemFailure(f"{record.describe()} is still running; confirm once it has "
                            "finished")
    try:
        path.unlink()
    except FileNotFoundError:
        raise SystemFailure("too late: the rollback has already started") from None
    return f"confirmed {record.title()}: the change stays"


def rollback(db: str | None = None, progress: Progress = _quiet) -> str:
    """Return the host to the state saved before the last unfinished or unconfirmed run."""
    from ovsnvgre import journal
    from ovsnvgre.ovsdb import Switch, default_remote

    path = journal.path_for(db or default_remote())
    record = journal.load(path)
    if record is None:
        raise SystemFailure(f"nothing to roll back: no rollback state in {path}")
    timer = journal.timer_pid(path)
    if record.state == journal.AWAITING and timer is not None:
        # The timer owns this rollback; ask it to do it now and wait for it.
        import signal

        progress(f"asking the confirmation timer (pid {timer}) to roll back now")
        os.kill(timer, signal.SIGUSR1)
        deadline = time.monotonic() + 120
        while journal.timer_pid(path) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if path.exists() or journal.taken_path(path).exists():
            raise SystemFailure(f"the rollback failed: see {journal.log_path(path)}")
        return f"rolled back {record.title()}"
    if record.still_applying():
        raise SystemFailure(f"{record.describe()} is still running; wait for it to finish")
    taken = journal.taken_path(path)
    try:
        os.rename(path, taken)
    except FileNotFoundError:
        raise SystemFailure("the rollback state disappeared: confirmed or rolled back by "
                            "another command meanwhile") from None
    try:
        with Switch(record.db) as switch:
            undone = restore(switch, record.snapshot, progress)
    except BaseException:
        os.rename(taken, path)
        raise
    journal.remove(taken)
    return f"rolled back {record.title()}: {undone} changes undone"


class RefusedPorts(SystemFailure):
    def __init__(self, result: RunResult, message: str) -> None:
        super().__init__(message)
        self.result = result


class UnderlayLost(SystemFailure):
    """The host stopped reaching its underlay after the change, and was rolled back."""
