"""What a pipeline stage is, and what every stage shares for one host.  Pure."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from ovsnvgre import nvgre
from ovsnvgre.desired import PEER_KEY, VSID_KEY, DesiredHost, PortSpec, Role, shared_vsids
from ovsnvgre.model import Fabric, FlowId, Overlay, TunnelPorts, Vm
from ovsnvgre.pipeline.flow import FLOW_ID_HASH


@dataclass(frozen=True)
class Context:
    """The facts of one host that the stages share, computed once per run.

    ``tables`` maps each stage name to its table number (from the stage order);
    ``tunnels`` every live GRE port frames arrive on (receive-only ports
    included), ``tunnel_vsids[port]`` the VSIDs each carries;
    ``tunnel_out[(peer, vsid)]`` holds the actions that send a frame of ``vsid``
    to ``peer`` (routed frames too) and ``peers_of[vsid]`` those of these peers that
    have a VM in ``vsid`` (where flooding goes), sorted; ``local_of[vsid]`` the
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
    # Every port on the switch now (issue 19: the external sides' bridge ports).
    live_ports: frozenset[str] = frozenset()

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
        per_peer = fabric.overlay.tunnel_ports == TunnelPorts.PER_PEER
        local_vms = [vm for vm in fabric.vms_on(desired.host.name) if vm.port in live_ports]
        tunnels = [p for p in desired.ports.values()
                   if p.role in (Role.TUNNEL, Role.TUNNEL_RECEIVE) and p.name in live_ports]
        context = cls(desired, tables, local_vms, tunnels, live_ports=frozenset(live_ports))
        for port in tunnels:
            peer = port.external_ids[PEER_KEY]
            vsids = _tunnel_vsids(desired, port)
            context.tunnel_vsids[port.name] = vsids
            if port.role == Role.TUNNEL_RECEIVE:
                continue
            for vsid in vsids:
                context.tunnel_out[peer, vsid] = (
                    [*set_key(fabric.overlay, vsid), f"output:{port.name}"] if per_peer
                    else [f"output:{port.name}"])
                if vsid in fabric.vsids_on(peer):
                    context.peers_of.setdefault(vsid, []).append(peer)
        for peers in context.peers_of.values():
            peers.sort()
        for vm in local_vms:
            context.local_of.setdefault(fabric.vsid_of(vm), []).append(vm)
        for vsid in fabric.vsids_on(desired.host.name):
            context.members_of[vsid] = fabric.vms_in(vsid)
        return context

    @cached_property
    def domain_numbers(self) -> dict[str, int]:
        """The number each routing domain has in ``flow.REG_DOMAIN`` on this host: its
        place in the fabric file, from 1 (0 is a frame of no routing domain)."""
        return {name: number for number, name in enumerate(self.fabric.routing_domains, 1)}

    @cached_property
    def local_domains(self) -> list[str]:
        """The routing domains of this host's live VMs, and those whose external gateway
        this host is (it routes their replies from outside), in file order: those whose
        distributed router runs here."""
        fabric = self.fabric
        mine = {fabric.routing_domain_of(vm) for vm in self.local_vms}
        mine.update(domain.name for domain in fabric.gateway_domains(self.desired.host.name))
        return [name for name in fabric.routing_domains if name in mine]


def set_key(overlay: Overlay, vsid: int) -> list[str]:
    """The actions that write the GRE key of a frame of ``vsid`` into ``tun_id``, for a
    tunnel port that takes its key from the flow (``key=flow``).

    The key is ``nvgre.tunnel_key`` (RFC 7637 section 3.2: VSID in the top 24 bits);
    with ``flow_id: hash`` the FlowID bits then get a hash of the inner flow
    (flow.FLOW_ID_HASH), else they stay 0.  Every mode that sets the key in the
    pipeline takes its key actions from here.
    """
    key = nvgre.tunnel_key(vsid, overlay.key_layout)
    actions = [f"set_field:{key:#x}->tun_id"]
    if overlay.flow_id == FlowId.HASH:
        actions.append(FLOW_ID_HASH)
    return actions


def keyed_by_flow(port: PortSpec) -> bool:
    """Whether ``port`` receives every key (``key=flow`` or ``in_key=flow``), so that
    the pipeline, not the port, reads the VSID from ``tun_id``."""
    return "flow" in (port.options.get("key"), port.options.get("in_key"))


def _tunnel_vsids(desired: DesiredHost, port: PortSpec) -> list[int]:
    if VSID_KEY in port.external_ids:
        return [int(port.external_ids[VSID_KEY])]
    peer = port.external_ids[PEER_KEY]
    return sorted(shared_vsids(desired.fabric, desired.host.name, peer))


@dataclass(frozen=True)
class Stage:
    """One table of the pipeline: its name, what it decides, and the flows it holds.

    ``decides`` is the stage's documentation (the README's pipeline table is made
    from it); ``drop_reason`` is what `trace` says of a packet this stage dropped,
    with ``{source}`` (the VM), ``{vsid}``, ``{domain}`` (the source's routing domain
    when the packet went to its router) and ``{address}`` (the destination) filled in.
    """

    name: str
    decides: str
    drop_reason: str
    flows: Callable[[Context, int], set]
