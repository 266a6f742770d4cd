"""The one survey: read the switch, the kernel and the owned flows, and plan against the
fabric, changing nothing.  `plan`, `status` and `trace` stop here; engine.py's converge
starts with the same survey.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from ovsnvgre import external, externalhost, handles, netlink, openflow
from ovsnvgre import trace as traces
from ovsnvgre.actual import ActualKernel, ActualPort, ActualSwitch
from ovsnvgre.changes import Plan
from ovsnvgre.desired import DesiredHost, desired_host
from ovsnvgre.errors import SystemFailure, UsageError
from ovsnvgre.external import ActualSide
from ovsnvgre.model import Fabric
from ovsnvgre.ovsdb import Switch
from ovsnvgre.pipeline import Flow, desired_flows
from ovsnvgre.plan import diff_flows, handle_candidates, is_owned, make_plan, with_flows
from ovsnvgre.progress import Progress, quiet
from ovsnvgre.safe import journal
from ovsnvgre.status import Report, build_report
from ovsnvgre.underlay import links_to_read


def select_host(fabric: Fabric, requested: str | None) -> str:
    """The host named by --host, or the one host of the fabric that is this machine
    (its PA configured here, or its name this machine's hostname).

    Raises UsageError when ``requested`` is not in the fabric, or when no host or
    several hosts match.
    """
    if requested is not None:
        if requested not in fabric.hosts:
            raise UsageError(f"{fabric.source}: no host {requested!r} in the fabric "
                             f"(hosts: {', '.join(fabric.hosts)})")
        return requested
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


@dataclass(frozen=True)
class Survey:
    """The host as read, and the plan against the fabric (flows included when asked)."""

    desired: DesiredHost
    actual: ActualSwitch
    kernel: ActualKernel
    installed: set[Flow]  # the owned flows of the integration bridge
    plan: Plan
    refused: dict[str, str]
    # The routing domains' namespaces on this gateway host, by name (issue 19).
    external: dict[str, ActualSide] = field(default_factory=dict)


def integration_bridge(desired: DesiredHost,
                       bridges: Mapping[str, Mapping[str, str]]) -> str | None:
    """The integration bridge if it exists and is this fabric's, else None.

    ``bridges``: each bridge's external_ids, by name.
    """
    name = desired.fabric.overlay.bridge
    external_ids = bridges.get(name)
    if external_ids is None or not is_owned(external_ids, desired.owner):
        return None
    return name


def survey(desired: DesiredHost, switch: Switch, removing: bool = False,
           flows: bool = True, prior: dict[str, ActualPort] | None = None) -> Survey:
    """Everything that differs from the fabric (or, removing, all ovsnvgre made),
    changing nothing.  A VM port whose device ovs-vswitchd holds a stale handle on
    (handles.py) differs too: the plan attaches it again.

    With ``flows`` the plan includes the flow changes, for the ports that exist or
    that the plan creates (ports ovs-vswitchd refuses now get no flows).  Raises
    SystemFailure when the switch cannot be read or a foreign row is in the way.
    ``prior``: the owned ports of a dead run's rollback state this run took over.
    """
    if prior is None and flows:
        # What the next `up` would take over, as it would (a read-only look).
        pending = journal.load(journal.path_for(switch.remote))
        prior = pending.snapshot.ports if pending is not None else None
    actual = switch.read()
    kernel = netlink.read(links_to_read(desired, actual, prior))
    unknown = None
    if not removing:
        handle_check = handles.check(handle_candidates(desired, actual), switch.remote)
        kernel = replace(kernel, stale=handle_check.stale)
        unknown = handle_check.unknown
    the_plan = make_plan(desired, actual, kernel, removing=removing, prior=prior)
    if unknown:
        the_plan = replace(the_plan, notes=(*the_plan.notes, "could not check whether "
                           f"ovs-vswitchd still holds the VM ports' devices: {unknown}"))
    sides, external_changes = externalhost.survey(desired.fabric, desired.host.name, removing)
    if external_changes:
        blocked = [] if removing else externalhost.blockers(desired.fabric, desired.host.name)
        the_plan = replace(the_plan, external=tuple(external_changes),
                           blockers=(*the_plan.blockers, *blocked))
    refused = actual.interfaces.only(set(desired.ports)).refused()
    bridge = integration_bridge(desired, actual.bridge_external_ids())
    installed = openflow.dump(bridge) if bridge else set()
    if flows:
        live = {name for name in desired.ports if name not in refused}
        wanted = set() if removing else desired_flows(desired, live)
        the_plan = with_flows(the_plan, diff_flows(desired.fabric.overlay.bridge, wanted,
                                                   installed))
        pending = _pending_note(switch.remote)
        if pending:
            the_plan = replace(the_plan, notes=(*the_plan.notes, pending))
    return Survey(desired, actual, kernel, installed, the_plan, refused, sides)


def _pending_note(remote: str) -> str | None:
    path = journal.path_for(remote)
    record = journal.load(path)
    if record is None:
        return None
    if record.state == journal.AWAITING and journal.timer_pid(path) is not None:
        return (f"{path} holds the state before {record.describe()}; `up` will not run "
                "until `ovsnvgre confirm` or `ovsnvgre rollback`")
    return (f"{path} holds the state before {record.describe()}; the next `up` takes it "
            "over (and returns to it if the underlay check fails), `ovsnvgre rollback` "
            "returns to it now")


def plan(fabric: Fabric, host: str, db: str | None = None, removing: bool = False,
         progress: Progress = quiet) -> Plan:
    """What `up` (or, removing, `down`) would change on ``host``; changes nothing.

    Raises SystemFailure when the switch cannot be read or a foreign row is in the way.
    """
    desired = desired_host(fabric, host)
    with Switch(db) as switch:
        progress(f"reading {switch.remote}, the kernel and the flows")
        return survey(desired, switch, removing).plan


def status(fabric: Fabric, host: str, db: str | None = None,
           progress: Progress = quiet) -> Report:
    """The host as it runs, and how it differs from the fabric; changes nothing."""
    desired = desired_host(fabric, host)
    with Switch(db) as switch:
        progress(f"reading {switch.remote}, the kernel and the flows")
        found = survey(desired, switch)
        details = switch.interface_details(desired.ports)
    report = build_report(desired, details, found.kernel, found.installed, found.plan,
                          found.refused)
    own = externalhost.own_addresses() if fabric.gateway_domains(host) else frozenset()
    return replace(report, external=external.report(fabric, host, found.external, own))


def trace(fabric: Fabric, source: str, target: str, proto: str = "icmp",
          host: str | None = None, db: str | None = None, ttl: int = 64
          ) -> traces.TraceResult:
    """Trace a packet from the local VM ``source`` to ``target`` (a VM name or an address)
    through the integration bridge (`ovs-appctl ofproto/trace`); ``ttl``: its IPv4 TTL.

    Raises UsageError for a VM, target or protocol the fabric does not know, and
    SystemFailure when the integration bridge is not set up.
    """
    the_probe = traces.probe(fabric, source, target, proto, ttl)
    vm_host = the_probe.source.host
    if host is not None and host != vm_host:
        raise UsageError(f"{fabric.source}: VM {source} is on host {vm_host}, not {host}: "
                         "trace it there")
    desired = desired_host(fabric, vm_host)
    with Switch(db) as switch:
        actual = switch.read()
    if integration_bridge(desired, actual.bridge_external_ids()) is None:
        raise SystemFailure(f"host {vm_host}: the integration bridge "
                            f"{fabric.overlay.bridge} is not set up: run `ovsnvgre up` first")
    bridge = actual.bridges[fabric.overlay.bridge]
    names = {ofport: name for name, (ofport, _) in actual.interfaces.items()
             if name in bridge.ports and ofport}
    raw = openflow.trace(fabric.overlay.bridge, the_probe.flow)
    parsed = traces.parse(raw, names)
    sentence, outputs = traces.verdict(desired, the_probe, parsed)
    return traces.TraceResult(the_probe, sentence, outputs, raw)
