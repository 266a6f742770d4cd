"""What a pipeline stage is, and what every stage shares for one host.  Pure."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from ovsnvgre import nvgre
from ovsnvgre.desired import (
    PEER_KEY,
    VSID_KEY,
    DesiredHost,
    PortSpec,
    Role,
    peers_sharing,
    shared_vsids,
)
from ovsnvgre.model import Fabric, FlowId, Overlay, TunnelPorts, Vm
from ovsnvgre.pipeline.flow import FLOW_ID_HASH


@dataclass(frozen=True)
class Context:
    """The facts of one host that the stages share, computed once per run.

    ``tables`` maps each stage name to its table number (from the stage order);
    ``tunnels`` every live GRE port frames arrive on (receive-only ports
    included), ``tunnel_vsids[port]`` the VSIDs each carries;
    ``tunnel_sources[port]``, for a port that takes frames from every peer (the
    flow port, ``remote_ip=flow``), the VSIDs of each peer by its PA (``tun_src``);
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
    tunnel_sources: dict[str, dict[str, list[int]]] = field(default_factory=dict)
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
        local_vms = [vm for vm in fabric.vms_on(desired.host.name) if vm.port in live_ports]
        tunnels = [p for p in desired.ports.values()
                   if p.role in (Role.TUNNEL, Role.TUNNEL_RECEIVE, Role.TUNNEL_FLOW)
                   and p.name in live_ports]
        context = cls(desired, tables, local_vms, tunnels, live_ports=frozenset(live_ports))
        for port in tunnels:
            if port.role == Role.TUNNEL_FLOW:
                context._add_flow_port(port)
                continue
            peer = port.external_ids[PEER_KEY]
            vsids = _tunnel_vsids(desired, port)
            context.tunnel_vsids[port.name] = vsids
            if port.role == Role.TUNNEL_RECEIVE:
                continue
            for vsid in vsids:
                context._add_out(peer, vsid, port.name)
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

    def _add_flow_port(self, port: PortSpec) -> None:
        """The flow port: every peer that shares a VSID with this host sends and
        receives through it, told apart by its PA (tun_src in, tun_dst out)."""
        fabric = self.fabric
        host = self.desired.host.name
        sources: dict[str, list[int]] = {}
        for peer in sorted(peers_sharing(fabric, self.desired.host)):
            # The same VSIDs a per-peer port towards that peer carries.
            vsids = sorted(shared_vsids(fabric, host, peer))
            sources[str(fabric.hosts[peer].pa.ip)] = vsids
            for vsid in vsids:
                self._add_out(peer, vsid, port.name)
        self.tunnel_sources[port.name] = sources
        self.tunnel_vsids[port.name] = sorted({v for vsids in sources.values() for v in vsids})

    def _add_out(self, peer: str, vsid: int, port: str) -> None:
        fabric = self.fabric
        self.tunnel_out[peer, vsid] = tunnel_send(fabric.overlay, port, vsid,
                                                  str(fabric.hosts[peer].pa.ip))
        # Flooding goes only where the peer has VMs of the VSID (routed keys excepted).
        if vsid in fabric.vsids_on(peer):
            self.peers_of.setdefault(vsid, []).append(peer)


def tunnel_send(overlay: Overlay, port: str, vsid: int, peer_pa: str) -> list[str]:
    """The actions that send a frame of ``vsid`` to the peer whose PA is ``peer_pa``.

    ``per-vsid``: the port's fixed key and remote_ip say it all; ``per-peer``: the
    port takes the key from the flow (``tun_id``, see set_key); ``flow``: the port
    takes the peer's PA (``tun_dst``) and the key from the flow
    (ovs-vswitchd.conf.db(5), Interface options remote_ip and key "flow";
    ovs-fields(7), tun_dst, tun_id).
    """
    if overlay.tunnel_ports == TunnelPorts.PER_VSID:
        return [f"output:{port}"]
    to_peer = ([f"set_field:{peer_pa}->tun_dst"] if overlay.tunnel_ports == TunnelPorts.FLOW
               else [])
    return [*to_peer, *set_key(overlay, vsid), f"output:{port}"]


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
    # True when the stage's flows are a union of pieces, each reading only: one VM of
    # ``members_of`` or ``local_vms`` (with its VSID's ``local_of``, ``peers_of`` and
    # ``tunnel_out``), one VSID of ``members_of`` (its ``local_of``, ``peers_of`` and
    # ``tunnel_out``), or one port of ``tunnels`` (its ``tunnel_vsids``).  `watch` then
    # recomputes only the pieces a change touches, from a Context that holds only them
    # (incremental.py).  A stage whose flows for one VSID read other VSIDs (a router
    # across a routing domain) or anything else of the fabric keeps False: watch
    # recomputes all its flows on every change.
    incremental: bool = False
