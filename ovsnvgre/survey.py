"""The one survey: read the switch, the kernel and the owned flows, and plan against the
fabric, changing nothing.  `plan`, `status` and `trace` stop here; engine.py's converge
starts with the same survey.
"""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace

from ovsnvgre import external, externalhost, flow_cache, handles, netlink, openflow
from ovsnvgre import trace as traces
from ovsnvgre.actual import ActualKernel, ActualPort, ActualSwitch
from ovsnvgre.changes import FlowChanges, Plan
from ovsnvgre.desired import DesiredHost, desired_host
from ovsnvgre.errors import SystemFailure, UsageError
from ovsnvgre.external import ActualSide
from ovsnvgre.model import Fabric
from ovsnvgre.openflow import FlowDump
from ovsnvgre.ovsdb import Switch
from ovsnvgre.ovsdb.remote import check_remote
from ovsnvgre.pipeline import Flow, desired_flows
from ovsnvgre.plan import (
    attach_again,
    by_dump_line,
    diff_dump,
    handle_candidates,
    is_owned,
    make_plan,
    with_flows,
)
from ovsnvgre.progress import Progress, quiet
from ovsnvgre.safe import journal
from ovsnvgre.status import Report, build_report
from ovsnvgre.underlay import links_to_read


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a run builds its state: it allocates some
    millions of objects at data-centre scale, none in cycles that matter for its
    few seconds, and each collection walks every live one (a quarter of the desired
    flows' time, measured).  At the end they go to the collector's permanent
    generation (gc.freeze): merely enabling it again would make the next allocation
    walk them all at once (0.18 s, measured).  A long-lived process (`watch`) gives
    them back to the oldest generation at its next run (gc.unfreeze), so cycles
    among them are still collected, at the collector's own pace."""
    was_enabled = gc.isenabled()
    gc.disable()
    gc.unfreeze()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


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


def require_local(remote: str) -> None:
    """Raise UsageError unless ``remote`` is this machine's switch.

    A run changes this machine's links, routes and flows (and probes from here), so
    its OVSDB writes must go to this machine's ovsdb-server too: a unix: socket, or
    tcp:/ssl: to an address of this machine.  `plan` and `status` may read anywhere.
    """
    kind, host, _ = check_remote(remote)
    if kind == "unix":
        return
    try:
        found = {ipaddress.ip_address(info[4][0].split("%")[0])
                 for info in socket.getaddrinfo(host, None)}
    except (OSError, ValueError):
        found = set()
    local = netlink.local_addresses()
    if found and all(ip.is_loopback or ip in local for ip in found):
        return
    raise UsageError(f"--db {remote} is not this machine's switch: `up`, `down` and `watch` "
                     "change this machine's links, routes and flows, so they only write to "
                     "its own ovsdb-server (`plan` and `status` may read any)")


@dataclass(frozen=True)
class Survey:
    """The host as read, and the plan against the fabric (flows included when asked).

    ``live``: the ports the desired flows are for (those that exist or that the plan
    creates, minus those ovs-vswitchd refuses now); ``flows_converged``: the bridge
    holds exactly those flows, no more, no fewer.
    """

    desired: DesiredHost
    actual: ActualSwitch
    kernel: ActualKernel
    installed: FlowDump  # the owned flows of the integration bridge
    plan: Plan
    refused: dict[str, str]
    live: frozenset[str] = frozenset()
    flows_converged: bool = False
    # The desired flows of ``live`` by Flow.dump_line, once computed (wanted()).
    computed: dict[str, dict[str, Flow]] = field(default_factory=dict, repr=False)
    # Their flow_cache key, and the digest stored under it when there was one.
    entry: str | None = None
    certified: str | None = None

    def wanted(self) -> dict[str, Flow]:
        """The desired flows of ``live`` (none when removing), by ``Flow.dump_line``,
        computed on first use (a certified digest may make them unnecessary); their
        digest is then stored for the next run."""
        if "flows" not in self.computed:
            flows = by_dump_line(desired_flows(self.desired, set(self.live)))
            self.computed["flows"] = flows
            entry = self.entry or flow_cache.key(self.desired.fabric, self.desired.host.name,
                                                 self.live)
            if entry and self.certified is None:
                flow_cache.put(entry, flow_cache.digest(flows))
        return self.computed["flows"]
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
    that the plan creates (ports ovs-vswitchd refuses now get no flows); without, it
    still finds whether the bridge holds exactly those flows (``flows_converged``:
    by a certified digest of them, flow_cache.py, or by computing them).  Raises
    SystemFailure when the switch cannot be read or a foreign row is in the way.
    ``prior``: the owned ports of a dead run's rollback state this run took over.
    """
    if prior is None and flows:
        # What the next `up` would take over, as it would (a read-only look).
        pending = journal.load(journal.path_for(switch.remote))
        prior = pending.snapshot.ports if pending is not None else None
    with contextlib.ExitStack() as stack:
        # ovs-ofctl and ovs-vswitchd print the flows while this process reads the
        # database and the kernel and computes the flows it wants; the dump is read
        # only if the bridge turns out to be this fabric's.
        dumping = _start_dump(stack, desired.fabric.overlay.bridge)
        actual = switch.read()
        bridge = integration_bridge(desired, actual.bridge_external_ids())
        if bridge is None:
            dumping = None
        elif dumping is None:
            dumping = stack.enter_context(openflow.PendingDump(bridge))
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
        sides, the_plan = _external(desired, actual, the_plan, removing)
        refused = actual.interfaces.only(set(desired.ports)).refused()
        live = frozenset(name for name in desired.ports if name not in refused)
        # Without a bridge there is no dump to compare: the key waits for wanted().
        entry = None if removing or dumping is None else flow_cache.key(
            desired.fabric, desired.host.name, live)
        certified = flow_cache.get(entry) if entry else None
        found = Survey(desired, actual, kernel, FlowDump(), the_plan, refused, live,
                       entry=entry, certified=certified, external=sides)
        if removing:
            found.computed["flows"] = {}
        elif certified is None and dumping is not None:
            found.wanted()  # beside the dump: it does not need it
        installed = dumping.result() if dumping else FlowDump()
    converged = _converged(found, installed, removing)
    if flows:
        changes = (FlowChanges(desired.fabric.overlay.bridge) if converged else
                   diff_dump(desired.fabric.overlay.bridge, found.wanted(), installed.lines))
        the_plan = with_flows(the_plan, changes)
        pending = _pending_note(switch.remote)
        if pending:
            the_plan = replace(the_plan, notes=(*the_plan.notes, pending))
    return replace(found, installed=installed, plan=the_plan, flows_converged=converged)


def _external(desired: DesiredHost, actual: ActualSwitch, the_plan: Plan, removing: bool
              ) -> tuple[dict[str, ActualSide], Plan]:
    """The routing domains' namespaces on this gateway host, and the plan with their
    changes and what would block them (issue 19).  A namespace made again while its
    bridge port's row is still there (a rollback or a reboot left the row without the
    namespace), or whose veth is made again while ovs-vswitchd has no port for it, gets
    that port attached again: ovs-vswitchd opens the new veth end for certain only then."""
    sides, external_changes = externalhost.survey(desired.fabric, desired.host.name, removing)
    if external_changes:
        blocked = externalhost.blockers(desired.fabric, desired.host.name, external_changes,
                                        removing)
        live = actual.interfaces.live()
        why = {change.bridge_port: f"the veth of namespace {change.netns} is made again, and "
               "ovs-vswitchd opens the new end for certain only when the port is added"
               for change in external_changes if change.bridge_port is not None
               and (change.action == "create"
                    or (change.action == "links" and change.bridge_port not in live))}
        ovsdb = attach_again(desired, actual, list(the_plan.ovsdb), why)
        the_plan = replace(the_plan, external=tuple(external_changes), ovsdb=tuple(ovsdb),
                           blockers=(*the_plan.blockers, *blocked))
    return sides, the_plan


def _converged(found: Survey, installed: FlowDump, removing: bool) -> bool:
    """Whether ``installed`` are exactly the desired flows: by the certified digest
    when there is one, else by the flows themselves."""
    if found.certified is not None:
        return found.certified == flow_cache.digest(installed.lines)
    if not installed.lines and not removing:
        return False  # every stage has flows: a new bridge has all to get
    return found.wanted().keys() == installed.lines


def _start_dump(stack: contextlib.ExitStack, bridge: str) -> openflow.PendingDump | None:
    """The dump of ``bridge`` started before knowing whether it is ovsnvgre's (read
    only if it is; left, and stopped, otherwise); None when it cannot start."""
    try:
        return stack.enter_context(openflow.PendingDump(bridge))
    except SystemFailure:
        return None  # no ovs-ofctl: said again if the dump is needed


def wanted_flows(found: Survey, live: set[str] | frozenset[str], removing: bool
                 ) -> dict[str, Flow]:
    """The desired flows for the ports ``live`` (by ``Flow.dump_line``): the survey's
    when they are for these ports, else computed (once) for them; none when removing."""
    if removing:
        return {}
    if live == found.live:
        return found.wanted()
    key = f"live:{','.join(sorted(live))}"
    if key not in found.computed:
        found.computed[key] = by_dump_line(desired_flows(found.desired, set(live)))
    return found.computed[key]


def changed_flows(found: Survey, live: set[str], installed: FlowDump, removing: bool
                  ) -> FlowChanges:
    """The flow changes for the ports ``live`` now, from the flows ``installed``: none
    when the survey found the bridge converged for exactly these ports and nothing was
    dumped again since."""
    bridge = found.desired.fabric.overlay.bridge
    if live == found.live and found.flows_converged and installed is found.installed:
        return FlowChanges(bridge)
    return diff_dump(bridge, wanted_flows(found, live, removing), installed.lines)


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
    with gc_paused(), Switch(db) as switch:
        progress(f"reading {switch.remote}, the kernel and the flows")
        return survey(desired, switch, removing).plan


def status(fabric: Fabric, host: str, db: str | None = None,
           progress: Progress = quiet) -> Report:
    """The host as it runs, and how it differs from the fabric; changes nothing."""
    desired = desired_host(fabric, host)
    with gc_paused(), Switch(db) as switch:
        progress(f"reading {switch.remote}, the kernel and the flows")
        found = survey(desired, switch)
        details = switch.interface_details(desired.ports)
    report = build_report(desired, details, found.kernel, found.installed.flows(found.wanted()),
                          found.plan, found.refused)
    rows = external.report(fabric, host, found.external,
                           externalhost.own_addresses() if found.external else frozenset())
    # A side that is not up is drift (status exits 3), said once: the plan's line names it.
    drift = [*report.drift, *(f"routing domain {row['domain']}'s external side is "
                              f"{row['state']}" for row in rows if row["state"] != "up"
                              and not any(str(row["namespace"]) in line
                                          for line in report.drift))]
    return replace(report, external=rows, drift=drift)


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
    domain = fabric.routing_domain_of(the_probe.source)
    gateway = fabric.routing_domains[domain].external if domain else None
    here = None if gateway is None or gateway.host != vm_host else frozenset(
        str(address) for address in externalhost.own_addresses())
    sentence, outputs = traces.verdict(desired, the_probe, parsed, here)
    return traces.TraceResult(the_probe, sentence, outputs, raw)
