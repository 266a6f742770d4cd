"""What a pipeline stage is, and what every stage shares for one host.  Pure."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ovsnvgre import nvgre
from ovsnvgre.desired import PEER_KEY, VSID_KEY, DesiredHost, PortSpec, Role
from ovsnvgre.model import Fabric, TunnelPorts, Vm


@dataclass(frozen=True)
class Context:
    """The facts of one host that the stages share, computed once per run.

    ``tables`` maps each stage name to its table number (from the stage order);
    ``tunnels`` every live GRE port frames arrive on (receive-only ports
    included), ``tunnel_vsids[port]`` the VSIDs each carries;
    ``tunnel_out[(peer, vsid)]`` holds the actions that send a frame of ``vsid``
    to ``peer`` and ``peers_of[vsid]`` those peers, sorted; ``local_of[vsid]`` the
    live local VMs of each VSID of this host; ``members_of[vsid]`` every VM of the
    fabric in that VSID.  Built in time linear in what the host's flows name: no
    stage needs to scan the fabric or the other VSIDs' tunnels.
    """

    desired: DesiredHost
    tables: dict[str, int]
    local_vms: list[Vm]
    tunnels: list[PortSpec]
    tunnel_out: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    tunnel_vsids: dict[str, list[int]] = field(default_factory=dict)
    peers_of: dict[int, list[str]] = field(default_factory=dict)
    local_of: dict[int, list[Vm]] = field(default_factory=dict)
    members_of: dict[int, tuple[Vm, ...]] = field(default_factory=dict)

    @property
    def fabric(self) -> Fabric:
        """The host's fabric."""
        return self.desired.fabric

    def goto(self, stage: str) -> str:
        """The action that continues in ``stage``'s table; KeyError for an unknown stage."""
        return f"goto_table:{self.tables[stage]}"

    @classmethod
    def build(cls, desired: DesiredHost, tables: dict[str, int], live_ports: set[str]
              ) -> Context:
        """The shared facts for the ports that are on the switch now (``live_ports``)."""
        fabric = desired.fabric
        layout = fabric.overlay.key_layout
        per_peer = fabric.overlay.tunnel_ports == TunnelPorts.PER_PEER
        local_vms = [vm for vm in fabric.vms_on(desired.host.name) if vm.port in live_ports]
        tunnels = [p for p in desired.ports.values()
                   if p.role in (Role.TUNNEL, Role.TUNNEL_RECEIVE) and p.name in live_ports]
        context = cls(desired, tables, local_vms, tunnels)
        for port in tunnels:
            peer = port.external_ids[PEER_KEY]
            vsids = _tunnel_vsids(desired, port)
            context.tunnel_vsids[port.name] = vsids
            if port.role == Role.TUNNEL_RECEIVE:
                continue
            for vsid in vsids:
                key = nvgre.tunnel_key(vsid, layout)
                context.tunnel_out[peer, vsid] = (
                    [f"set_field:{key:#x}->tun_id", f"output:{port.name}"] if per_peer
                    else [f"output:{port.name}"])
                context.peers_of.setdefault(vsid, []).append(peer)
        for peers in context.peers_of.values():
            peers.sort()
        for vm in local_vms:
            context.local_of.setdefault(fabric.vsid_of(vm), []).append(vm)
        for vsid in fabric.vsids_on(desired.host.name):
            context.members_of[vsid] = fabric.vms_in(vsid)
        return context


def keyed_by_flow(port: PortSpec) -> bool:
    """Whether ``port`` receives every key (``key=flow`` or ``in_key=flow``), so that
    the pipeline, not the port, reads the VSID from ``tun_id``."""
    return "flow" in (port.options.get("key"), port.options.get("in_key"))


def _tunnel_vsids(desired: DesiredHost, port: PortSpec) -> list[int]:
    if VSID_KEY in port.external_ids:
        return [int(port.external_ids[VSID_KEY])]
    fabric = desired.fabric
    peer = port.external_ids[PEER_KEY]
    return sorted(fabric.vsids_on(desired.host.name) & fabric.vsids_on(peer))


@dataclass(frozen=True)
class Stage:
    """One table of the pipeline: its name, what it decides, and the flows it holds.

    ``decides`` is the stage's documentation (the README's pipeline table is made
    from it); ``drop_reason`` is what `trace` says of a packet this stage dropped,
    with ``{source}`` (the VM) and ``{vsid}`` filled in.
    """

    name: str
    decides: str
    drop_reason: str
    flows: Callable[[Context, int], set]
    # True when the stage's flows are a union of pieces, each reading only: one VM of
    # ``members_of`` or ``local_vms`` (with its VSID's ``local_of``, ``peers_of`` and
    # ``tunnel_out``), one VSID of ``members_of`` (its ``local_of``, ``peers_of`` and
    # ``tunnel_out``), or one port of ``tunnels`` (its ``tunnel_vsids``).  `watch` then
    # recomputes only the pieces a change touches, from a Context that holds only them
    # (incremental.py).  A stage whose flows for one VSID read other VSIDs (a router
    # across a routing domain) or anything else of the fabric keeps False: watch
    # recomputes all its flows on every change.
    incremental: bool = False
