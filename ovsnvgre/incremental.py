"""What a change touches, computed from the last state instead of from scratch: the
part of `watch`'s runs that is pure (watch_run.py does the I/O).

A ``Model`` is one host as the last run left it: the fabric, the DesiredHost, the
ports that have an OpenFlow number (``live``), the pipeline's Context and the flows
the pipeline gives for them (installed by that run).  ``Model.step`` takes the next
fabric (or the same) and the ports whose liveness is known again, and returns the
next Model with the flow changes between the two, recomputing only:

- the DesiredHost's VM ports of the VMs that changed on this host, unless a host
  gained or lost a VSID (its tunnel ports may change: desired_host again);
- the flows of the pieces the change touches (see ``Stage.incremental``): each changed
  VM (old and new), each VSID they are in, each tunnel port whose row or liveness
  changed (with its peer's VMs in its VSIDs), each VSID that appears on this host or
  leaves it (all its VMs).  The pipeline's stages compute them, from a Context that
  holds only those pieces, once for the old state and once for the new: the flow
  changes are the difference of the two.  A stage that is not incremental is
  recomputed whole, from whole Contexts.

Only VMs may differ between the two fabrics: ``vm_changes`` returns None for any
other change (hosts, virtual subnets, settings, and any field a later version adds
to the Fabric), and the caller then runs the full convergence.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from ovsnvgre.changes import FlowChanges
from ovsnvgre.desired import DesiredHost, Role, desired_host
from ovsnvgre.model import Fabric, FabricIndex, Vm
from ovsnvgre.pipeline import STAGES, TABLES, Flow
from ovsnvgre.pipeline.stage import Context
from ovsnvgre.plan import diff_flows

TUNNEL_ROLES = (Role.TUNNEL, Role.TUNNEL_RECEIVE, Role.TUNNEL_FLOW)
# The Context's fields by what they come from: carried as they are, made again from this
# host's VMs, or from the tunnel ports (kept while no tunnel port changes).  A field
# that is in none of them makes every step build the Context whole
# (tests/test_incremental.py says which field to sort).
CONTEXT_SAME = frozenset({"desired", "tables"})
CONTEXT_LOCAL = frozenset({"local_vms", "local_of", "members_of", "live_ports"})
CONTEXT_TUNNELS = frozenset({"tunnels", "tunnel_out", "tunnel_vsids", "tunnel_sources",
                             "peers_of"})


def vm_changes(old: Fabric, new: Fabric) -> set[str] | None:
    """The names of the VMs added, removed or changed from ``old`` to ``new``; None when
    anything else differs (then only a full convergence is right)."""
    for spec in fields(Fabric):
        if spec.name not in ("vms", "source") and getattr(old, spec.name) != getattr(new,
                                                                                   spec.name):
            return None
    if old.vms is new.vms:
        return set()
    changed = set(old.vms.keys() ^ new.vms.keys())
    before = old.vms
    for name, vm in new.vms.items():
        was = before.get(name)
        if was is not None and was is not vm and was != vm:
            changed.add(name)
    return changed


def _versions(old: Fabric, new: Fabric, names: set[str]) -> list[Vm]:
    """Both versions of each VM of ``names`` (the ones that exist)."""
    found = []
    for name in names:
        for fabric in (old, new):
            vm = fabric.vms.get(name)
            if vm is not None:
                found.append(vm)
    return found


def carry_index(old: Fabric, new: Fabric, changed: set[str]) -> None:
    """Give ``new`` the index of ``old`` with only the hosts and VSIDs of the ``changed``
    VMs made again (model.FabricIndex, equal to the one a whole pass builds, in file
    order); nothing when ``old`` has none yet or ``new`` has one."""
    if "index" in new.__dict__ or "index" not in old.__dict__:
        return
    was = old.index
    versions = _versions(old, new, changed)
    added = [vm for name in changed if (vm := new.vms.get(name)) is not None]
    order: dict[str, int] = {}

    def again(members: tuple[Vm, ...], joins: list[Vm]) -> tuple[Vm, ...]:
        kept = [vm for vm in members if vm.name not in changed]
        if not joins:
            return tuple(kept)
        if not order:
            order.update((name, i) for i, name in enumerate(new.vms))
        return tuple(sorted(kept + joins, key=lambda vm: order[vm.name]))

    by_host, vsids_by_host = dict(was.vms_by_host), dict(was.vsids_by_host)
    by_vsid, hosts_by_vsid = dict(was.vms_by_vsid), dict(was.hosts_by_vsid)
    for host in {vm.host for vm in versions}:
        vms = again(by_host.get(host, ()), [vm for vm in added if vm.host == host])
        by_host[host] = vms
        vsids_by_host[host] = frozenset(new.vsid_of(vm) for vm in vms)
        if not vms:
            del by_host[host], vsids_by_host[host]
    for vsid in {new.vsid_of(vm) for vm in versions}:
        vms = again(by_vsid.get(vsid, ()), [vm for vm in added if new.vsid_of(vm) == vsid])
        by_vsid[vsid] = vms
        hosts_by_vsid[vsid] = tuple(dict.fromkeys(vm.host for vm in vms))
        if not vms:
            del by_vsid[vsid], hosts_by_vsid[vsid]
    # What cached_property stores: the Fabric is frozen, its index derived.
    new.__dict__["index"] = FabricIndex(by_host, vsids_by_host, by_vsid, hosts_by_vsid)


def next_desired(old: DesiredHost, fabric: Fabric, changed: set[str]) -> DesiredHost:
    """``desired_host(fabric, host)``, from ``old`` and the VMs that ``changed``.

    When every host keeps the VSIDs it had, the tunnel ports and every other row stay
    what they were, and only the VM ports of the changed VMs of this host are made
    again, by desired_host itself on a fabric that holds only those VMs.
    """
    host = old.host.name
    carry_index(old.fabric, fabric, changed)
    versions = _versions(old.fabric, fabric, changed)
    if any(old.fabric.vsids_on(h) != fabric.vsids_on(h) for h in {vm.host for vm in versions}):
        return desired_host(fabric, host)
    local = [vm for vm in versions if vm.host == host]
    if not local:
        return replace(old, fabric=fabric)
    ports = dict(old.ports)
    for vm in local:
        spec = ports.get(vm.port)
        if spec is not None and spec.role == Role.VM:
            del ports[vm.port]
    mine = {name: vm for name in changed
            if (vm := fabric.vms.get(name)) is not None and vm.host == host}
    if mine:
        # This host alone: its VM ports need no other host (and no peer routes).
        few = desired_host(replace(fabric, vms=mine, hosts={host: fabric.hosts[host]}), host)
        ports.update({name: spec for name, spec in few.ports.items() if spec.role == Role.VM})
    return replace(old, fabric=fabric, ports=ports)


def pipeline_flows(context: Context, incremental: bool | None = None) -> set[Flow]:
    """The flows of the stages (all, or only those whose ``incremental`` is as given)."""
    flows: set[Flow] = set()
    for stage in STAGES:
        if incremental is None or stage.incremental == incremental:
            flows |= stage.flows(context, TABLES[stage.name])
    return flows


def _changed_ports(old: Model, desired: DesiredHost, live: frozenset[str]) -> set[str]:
    """The ports whose row or liveness differs between ``old`` and the new state."""
    names = set(old.live ^ live)
    before, after = old.desired.ports, desired.ports
    if before is not after:
        names |= before.keys() ^ after.keys()
        names |= {name for name, spec in after.items()
                  if (was := before.get(name)) is not spec and was != spec}
    return names


def _context(old: Model, desired: DesiredHost, live: frozenset[str], tunnels_changed: bool
             ) -> Context:
    """The whole Context of the new state: the tunnel part from ``old`` when no tunnel
    port changed (it is most of the cost), the rest computed again."""
    known = CONTEXT_SAME | CONTEXT_LOCAL | CONTEXT_TUNNELS
    if tunnels_changed or {spec.name for spec in fields(Context)} - known:
        return Context.build(desired, TABLES, set(live))
    no_tunnels = replace(desired, ports={name: spec for name, spec in desired.ports.items()
                                          if spec.role not in TUNNEL_ROLES})
    local = Context.build(no_tunnels, TABLES, set(live))
    return replace(local, desired=desired,
                   **{name: getattr(old.context, name) for name in CONTEXT_TUNNELS})


def _only(context: Context, vms: set[str], vsids: set[int], tunnels: set[str],
          whole: set[int]) -> Context:
    """``context`` holding only the given pieces: the VMs ``vms`` (every VM of the VSIDs
    in ``whole``), the VSIDs ``vsids`` and the tunnel ports ``tunnels``."""
    members = {vsid: (context.members_of[vsid] if vsid in whole else
                      tuple(vm for vm in context.members_of[vsid] if vm.name in vms))
               for vsid in vsids if vsid in context.members_of}
    return replace(context, members_of=members,
                   local_vms=[vm for vm in context.local_vms if vm.name in vms],
                   tunnels=[port for port in context.tunnels if port.name in tunnels])


def _tunnel_pieces(was: Context, now: Context) -> tuple[set[str], set[int], set[str]]:
    """What differs in the tunnel part of two whole Contexts: the VMs whose way out
    (``tunnel_out`` of their host and VSID) changed, the VSIDs whose flooding peers or
    ways out changed, and the tunnel ports whose VSIDs or sources changed."""
    vms: set[str] = set()
    vsids: set[int] = set()
    for key in was.tunnel_out.keys() | now.tunnel_out.keys():
        if was.tunnel_out.get(key) != now.tunnel_out.get(key):
            peer, vsid = key
            vsids.add(vsid)
            for context in (was, now):
                vms |= {vm.name for vm in context.fabric.vms_in(vsid) if vm.host == peer}
    vsids |= {vsid for vsid in was.peers_of.keys() | now.peers_of.keys()
              if was.peers_of.get(vsid) != now.peers_of.get(vsid)}
    ports = {name for name in was.tunnel_vsids.keys() | now.tunnel_vsids.keys()
             if was.tunnel_vsids.get(name) != now.tunnel_vsids.get(name)}
    ports |= {name for name in was.tunnel_sources.keys() | now.tunnel_sources.keys()
              if was.tunnel_sources.get(name) != now.tunnel_sources.get(name)}
    return vms, vsids, ports


@dataclass(frozen=True)
class Model:
    """One host as the last run left it (see the module docstring)."""

    desired: DesiredHost
    live: frozenset[str]
    context: Context
    # The flows installed; ``step`` changes this set in place and hands it on (copying
    # 70,000 flows per change cost more than computing the change).
    flows: set[Flow]

    @property
    def fabric(self) -> Fabric:
        """The fabric of the last run."""
        return self.desired.fabric

    @classmethod
    def build(cls, desired: DesiredHost, live: set[str] | frozenset[str]) -> Model:
        """The whole computation, as `up` does it (pipeline.desired_flows)."""
        context = Context.build(desired, TABLES, set(live))
        return cls(desired, frozenset(live), context, pipeline_flows(context))

    @classmethod
    def known(cls, desired: DesiredHost, live: frozenset[str], flows: frozenset[Flow]
              ) -> Model:
        """The Model of a run that computed (and installed) ``flows`` already."""
        return cls(desired, live, Context.build(desired, TABLES, set(live)), set(flows))

    def step(self, fabric: Fabric, changed: set[str], live: set[str] | frozenset[str],
             desired: DesiredHost | None = None) -> tuple[Model, FlowChanges]:
        """The next Model for ``fabric`` (whose VMs ``changed`` are all that differs from
        this Model's fabric: see vm_changes) and the ports that are ``live`` now, with the
        flow changes from this Model's flows to the next one's.  ``desired``: the next
        DesiredHost when the caller has it already (next_desired).  The next Model takes
        this one's flow set over (see ``flows``)."""
        if desired is None:
            desired = next_desired(self.desired, fabric, changed) if changed else \
                replace(self.desired, fabric=fabric)
        live = frozenset(live)
        ports = _changed_ports(self, desired, live)
        tunnels = {name for name in ports
                   if (spec := desired.ports.get(name) or self.desired.ports.get(name))
                   is not None and spec.role in TUNNEL_ROLES}
        # desired_host ran again (a host gained or lost a VSID): a tunnel port's row can
        # stay the same while the VSIDs it carries change (per-peer, receive-only ports).
        rebuilt = any(spec.role in TUNNEL_ROLES and self.desired.ports.get(name) is not spec
                      for name, spec in desired.ports.items())
        context = _context(self, desired, live, bool(tunnels) or rebuilt)
        old_fabric, host = self.fabric, desired.host.name
        versions = _versions(old_fabric, fabric, changed)
        # VMs whose port came or went on the switch count as changed too.
        flipped = {vm.name for vm in (*old_fabric.vms_on(host), *fabric.vms_on(host))
                   if vm.port in ports}
        vms = set(changed) | flipped
        vsids = {fabric.vsid_of(vm) for vm in versions}  # the same virtual subnets in both
        vsids |= {fabric.vsid_of(vm) for name in flipped
                  for vm in (fabric.vms.get(name), old_fabric.vms.get(name)) if vm is not None}
        if context.tunnel_out is not self.context.tunnel_out:  # built whole again
            more_vms, more_vsids, more_ports = _tunnel_pieces(self.context, context)
            vms |= more_vms
            vsids |= more_vsids
            tunnels |= more_ports
        whole = set(self.context.members_of.keys() ^ context.members_of.keys())
        vsids |= whole
        before = pipeline_flows(_only(self.context, vms, vsids, tunnels, whole), True)
        after = pipeline_flows(_only(context, vms, vsids, tunnels, whole), True)
        if any(not stage.incremental for stage in STAGES):
            before |= pipeline_flows(self.context, False)
            after |= pipeline_flows(context, False)
        changes = diff_flows(desired.fabric.overlay.bridge, after, before)
        replaced = {flow.key for flow in changes.add}
        flows = self.flows  # taken over: this Model is the past now
        flows -= set(changes.delete) | {flow for flow in before if flow.key in replaced}
        flows |= set(changes.add)
        return Model(desired, live, context, flows), changes
