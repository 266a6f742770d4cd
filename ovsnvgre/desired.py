"""Fabric + host name -> DesiredHost: the switch rows and kernel state that host should have.

Pure: no I/O.  The rows are described with the columns ovsnvgre manages; the
plan compares exactly those columns with what the switch holds.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ovsnvgre import external, nvgre
from ovsnvgre.model import Choice, DatapathType, Fabric, Host, KeyLayout, TunnelPorts

# external_ids keys.  The fabric key is the ownership marker: a row is ovsnvgre's
# when it carries it with this fabric's name.
OWNER_KEY = "ovsnvgre-fabric"
ROLE_KEY = "ovsnvgre-role"
PEER_KEY = "ovsnvgre-peer"
VSID_KEY = "ovsnvgre-vsid"
VM_KEY = "ovsnvgre-vm"
DOMAIN_KEY = "ovsnvgre-routing-domain"


class Role(Choice):
    """What an owned row is for: the value of its ``ovsnvgre-role`` external_id."""

    UNDERLAY_BRIDGE = "underlay-bridge"
    INTEGRATION_BRIDGE = "integration-bridge"
    TEP = "tep"          # the internal port of the underlay bridge that holds the PA
    UPLINK = "uplink"    # the host's NIC, enslaved to the underlay bridge
    TUNNEL = "tunnel"    # a GRE port towards a peer's PA
    # per-vsid + rfc7637: a GRE port towards a peer's PA with in_key=flow, that only
    # receives (no flow sends to it): the frames whose FlowID is not 0.
    TUNNEL_RECEIVE = "tunnel-receive"
    # tunnel_ports: flow: the one GRE port towards every peer (remote_ip=flow, key=flow);
    # the pipeline picks the peer (tun_dst) and the key per frame.
    TUNNEL_FLOW = "tunnel-flow"
    VM = "vm"            # a VM's port on the integration bridge
    # A routing domain's external side: the veth to its namespace on the gateway host.
    EXTERNAL = "external"


@dataclass(frozen=True)
class BridgeSpec:
    """A Bridge row as ovsnvgre wants it (the columns it manages)."""

    name: str
    datapath_type: str
    protocols: tuple[str, ...]
    fail_mode: str | None
    external_ids: dict[str, str]


@dataclass(frozen=True)
class PortSpec:
    """A Port row with its one Interface row (ovsnvgre never makes bonds)."""

    name: str
    bridge: str
    role: Role | str  # a row restored from a snapshot keeps the role it carried
    iface_type: str
    options: dict[str, str]
    external_ids: dict[str, str]
    # A VM port the hypervisor already put on the bridge is left alone.
    adopt_existing: bool = False
    # The Interface's bfd column (managed always) and mtu_request (None: left alone).
    bfd: dict[str, str] = field(default_factory=dict)
    mtu_request: int | None = None
    # The Interface's mac column (None: left alone); the tep port takes the uplink's.
    mac: str | None = None


@dataclass(frozen=True)
class RouteSpec:
    """A route in the main table, on whichever link holds it."""

    dst: ipaddress.IPv4Network | ipaddress.IPv6Network
    gateway: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    metric: int = 0
    # Who made the route (rtnetlink protocol; 4 = static).  Kept so that a moved
    # route goes back as it was, but not part of a route's identity.
    proto: int = field(default=4, compare=False)
    # The gateway is on the link even outside its subnets (RTNH_F_ONLINK): the kernel
    # refuses such a route without the flag, so a moved route keeps it.
    onlink: bool = field(default=False, compare=False)

    def __str__(self) -> str:
        text = "default" if self.dst.prefixlen == 0 else str(self.dst)
        if self.gateway is not None:
            text += f" via {self.gateway}"
        if self.metric:
            text += f" metric {self.metric}"
        if self.onlink:
            text += " onlink"
        return text


@dataclass(frozen=True)
class DesiredHost:
    """What one host should look like: OVSDB rows, and the kernel side of the tep port."""

    fabric: Fabric
    host: Host
    bridges: dict[str, BridgeSpec]
    ports: dict[str, PortSpec]
    pa: ipaddress.IPv4Interface
    peer_routes: tuple[RouteSpec, ...] = field(default=())

    @property
    def owner(self) -> str:
        """The fabric whose marker the host's rows carry."""
        return self.fabric.name

    @property
    def tep_port(self) -> str:
        """The tep port's name (underlay.tep_port)."""
        return self.fabric.underlay.tep_port

    @property
    def uplink(self) -> str | None:
        """The uplink NIC's name, or None when the fabric names none."""
        return self.host.uplink


def owner_ids(fabric: Fabric, role: Role, **extra: str) -> dict[str, str]:
    """The external_ids that mark a row as this fabric's, with its role and ``extra`` keys."""
    ids = {OWNER_KEY: fabric.name, ROLE_KEY: role.value}
    ids.update({key: value for key, value in extra.items()})
    return ids


def desired_host(fabric: Fabric, host_name: str) -> DesiredHost:
    """The rows, PA and peer routes of ``host_name``; KeyError when the fabric has no such host."""
    host = fabric.hosts[host_name]
    underlay, overlay = fabric.underlay, fabric.overlay
    bridges = {
        underlay.bridge: BridgeSpec(
            name=underlay.bridge, datapath_type=fabric.datapath_type.value, protocols=(),
            fail_mode=None, external_ids=owner_ids(fabric, Role.UNDERLAY_BRIDGE)),
        # fail_mode=secure: a bridge without flows drops instead of flooding, so a
        # freshly restarted switch never leaks frames between tenants.
        overlay.bridge: BridgeSpec(
            name=overlay.bridge, datapath_type=fabric.datapath_type.value,
            protocols=("OpenFlow10", "OpenFlow13"), fail_mode="secure",
            external_ids=owner_ids(fabric, Role.INTEGRATION_BRIDGE)),
    }
    ports: list[PortSpec] = [
        PortSpec(name=underlay.tep_port, bridge=underlay.bridge, role=Role.TEP,
                 iface_type="internal", options={},
                 external_ids=owner_ids(fabric, Role.TEP)),
    ]
    if host.uplink:
        ports.append(PortSpec(name=host.uplink, bridge=underlay.bridge, role=Role.UPLINK,
                              iface_type="", options={},
                              external_ids=owner_ids(fabric, Role.UPLINK)))
    ports.extend(tunnel_ports(fabric, host))
    for vm in sorted(fabric.vms_on(host_name), key=lambda vm: vm.port):
        ports.append(PortSpec(
            name=vm.port, bridge=overlay.bridge, role=Role.VM, iface_type="", options={},
            external_ids=owner_ids(fabric, Role.VM, **{VM_KEY: vm.name,
                                                        VSID_KEY: str(fabric.vsid_of(vm))}),
            adopt_existing=True, mtu_request=overlay.vm_mtu))
    for domain in fabric.gateway_domains(host_name):
        ports.append(PortSpec(
            name=external.bridge_port(fabric, domain.name), bridge=overlay.bridge,
            role=Role.EXTERNAL, iface_type="", options={},
            external_ids=owner_ids(fabric, Role.EXTERNAL, **{DOMAIN_KEY: domain.name})))
    return DesiredHost(fabric=fabric, host=host, bridges=bridges,
                     ports={port.name: port for port in ports}, pa=host.pa,
                     peer_routes=tuple(peer_routes(fabric, host)))


def peers_sharing(fabric: Fabric, host: Host) -> dict[str, set[int]]:
    """Each other host this host exchanges frames with, and the VSIDs (keys) it takes.

    A VSID is shared with a peer when both have a VM in it (bridged), when this host's
    VMs route to the peer's VMs of that VSID (the frame carries the destination VSID),
    or the other way round (see ``shared_vsids``).  Symmetric: the peer's answer for
    this host is the same set, so both ends have the port (per-vsid) for each key.

    Looked up per VSID of this host and per routing domain (``Fabric.hosts_with``,
    ``Fabric.hosts_in_domain``): the cost is the size of the answer, not the number of
    hosts times the number of VMs.
    """
    shared: dict[str, set[int]] = {}
    name = host.name
    for vsid in fabric.vsids_on(name) | fabric.routed_vsids(name):
        for other in fabric.hosts_with(vsid):
            if other != name:
                shared.setdefault(other, set()).add(vsid)
    for domain in fabric.domains_on(name):
        routed_here = [s.vsid for s in fabric.subnets_in(domain)
                       if s.vsid in fabric.vsids_on(name)]
        for other in fabric.hosts_in_domain(domain):
            if other != name:
                shared.setdefault(other, set()).update(routed_here)
        # Issue 19: packets for outside go to the domain's gateway host with the source
        # VSID's key, and its replies come back with it.
        gateway = fabric.routing_domains[domain].external
        if gateway is not None and gateway.host != name and routed_here:
            shared.setdefault(gateway.host, set()).update(routed_here)
    return shared


# ovs-vswitchd numbers a bridge's ports by itself only in the lower half of the OpenFlow
# range (ofproto.c, alloc_ofp_port: the upper half is kept for controllers); a port
# beyond it is refused ("No space left on device").
MAX_AUTO_OFPORTS = 32767


def per_vsid_ports_at_least(fabric: Fabric, host: str) -> int:
    """A lower bound of ``host``'s tunnel ports in per-vsid mode: one port per (peer,
    VSID both have VMs in), plus, with the rfc7637 layout, one receive-only port per
    peer.  Routed and gateway VSIDs only add to it.  The peers are counted only when the
    pairs alone come near the limit (``MAX_AUTO_OFPORTS``): a union of every VSID's
    hosts, which at 5,000 hosts costs what a per-host scan of the fabric does."""
    pairs = sum(len(fabric.hosts_with(vsid)) - 1 for vsid in fabric.vsids_on(host))
    if fabric.overlay.key_layout != KeyLayout.RFC7637:
        return pairs
    if pairs + min(pairs, len(fabric.hosts) - 1) <= MAX_AUTO_OFPORTS:
        return pairs + (1 if pairs else 0)  # enough to say it fits: not the exact count
    peers = set().union(*(fabric.hosts_with(vsid) for vsid in fabric.vsids_on(host)))
    return pairs + len(peers - {host})


def too_many_ports(fabric: Fabric) -> list[str]:
    """The hosts whose per-vsid tunnel ports alone exceed what ovs-vswitchd numbers on one
    bridge (``MAX_AUTO_OFPORTS``), one line each; none in the other tunnel modes."""
    if fabric.overlay.tunnel_ports != TunnelPorts.PER_VSID:
        return []
    lines = []
    for host in fabric.hosts:
        needed = per_vsid_ports_at_least(fabric, host)
        if needed > MAX_AUTO_OFPORTS:
            lines.append(f"host {host} needs at least {needed:,} tunnel ports with "
                         f"overlay.tunnel_ports per-vsid, and Open vSwitch numbers at most "
                         f"{MAX_AUTO_OFPORTS:,} ports on a bridge: `up` would fail there; "
                         "per-peer or flow mode needs one port per peer or one in all")
    return lines


# On the userspace datapath each natively pushed tunnel copy costs ~84 bytes of datapath
# actions, and ovs-vswitchd stops translating a packet past 64 KB ("resubmits yielded
# over 64 kB of actions", checked at every tunnel output): measured, a broadcast to 2,100
# peers reached 780 of them.  The kernel datapath slow-paths such a flow instead.
USERSPACE_FLOOD_PEERS = 750


def flood_limits(fabric: Fabric) -> list[str]:
    """With the userspace datapath, the VSIDs whose VMs are on more hosts than one
    broadcast reaches (``USERSPACE_FLOOD_PEERS`` peers), one line each."""
    if fabric.datapath_type != DatapathType.NETDEV:
        return []
    lines = []
    for name, subnet in fabric.virtual_subnets.items():
        peers = len(fabric.hosts_with(subnet.vsid)) - 1
        if peers > USERSPACE_FLOOD_PEERS:
            lines.append(f"virtual subnet {name} (VSID {subnet.vsid}) has VMs on {peers + 1:,} "
                         "hosts: with datapath_type netdev a broadcast, multicast or unknown "
                         f"unicast frame reaches only about {USERSPACE_FLOOD_PEERS} peers (Open "
                         "vSwitch translates at most 64 KB of actions a packet); the kernel "
                         "datapath (system) reaches them all")
    return lines


def shared_vsids(fabric: Fabric, host: str, peer: str) -> set[int]:
    """The VSIDs whose frames cross the tunnel between ``host`` and ``peer``, either way:
    those both have a VM in, and those of one's VMs that the other's routing domains
    route to (issue 18: a routed frame carries the destination VSID's key, so in
    per-vsid mode both ends need that key's port even where only one has its VMs)."""
    here, there = fabric.vsids_on(host), fabric.vsids_on(peer)
    return set((here & there) | (there & fabric.routed_vsids(host))
               | (here & fabric.routed_vsids(peer)))


def tunnel_ports(fabric: Fabric, host: Host) -> list[PortSpec]:
    """The GRE ports of ``host``: one per peer (per-peer) or per (peer, shared VSID),
    with remote_ip, local_ip, csum=false and the key (ovs-vswitchd.conf.db(5), options);
    or, with ``tunnel_ports: flow``, the one flow port when any peer shares a VSID."""
    layout = fabric.overlay.key_layout
    bfd = {"enable": "true"} if fabric.overlay.bfd else {}
    shared = peers_sharing(fabric, host)
    if fabric.overlay.tunnel_ports == TunnelPorts.FLOW:
        return [flow_port(fabric, host)] if shared else []
    ports = []
    for peer_name, vsids in sorted(shared.items()):
        peer = fabric.hosts[peer_name]
        base_options = {"remote_ip": str(peer.pa.ip), "local_ip": str(host.pa.ip),
                        "csum": "false"}
        if fabric.overlay.tunnel_ports == TunnelPorts.PER_PEER:
            ports.append(PortSpec(
                name=nvgre.tunnel_port_name(peer.pa.ip, None), bridge=fabric.overlay.bridge,
                role=Role.TUNNEL, iface_type="gre", options={**base_options, "key": "flow"},
                external_ids=owner_ids(fabric, Role.TUNNEL, **{PEER_KEY: peer_name}), bfd=bfd))
            continue
        if layout == KeyLayout.RFC7637:
            ports.append(receive_port(fabric, peer_name, base_options))
        for vsid in sorted(vsids):
            key = nvgre.tunnel_key(vsid, layout)
            ports.append(PortSpec(
                name=nvgre.tunnel_port_name(peer.pa.ip, vsid), bridge=fabric.overlay.bridge,
                role=Role.TUNNEL, iface_type="gre", options={**base_options, "key": str(key)},
                external_ids=owner_ids(fabric, Role.TUNNEL,
                                       **{PEER_KEY: peer_name, VSID_KEY: str(vsid)}),
                bfd=bfd))
    return ports


def flow_port(fabric: Fabric, host: Host) -> PortSpec:
    """The one GRE port of ``tunnel_ports: flow`` (nvgre.FLOW_PORT), towards every peer.

    ``remote_ip=flow``: it takes frames from any remote tunnel endpoint, which
    the classify stage tells apart by ``tun_src``, and sends wherever the flow
    set ``tun_dst``; ``key=flow``: it takes every key (into ``tun_id``) and sends
    the one the flow set (ovs-vswitchd.conf.db(5), Interface options remote_ip
    and key).  ``local_ip`` is the host's PA, as on the ports of the other modes,
    so it takes only frames sent to this host's PA.  It carries no BFD: a session
    needs one remote (fabric.py refuses ``bfd: true`` with this mode).
    """
    return PortSpec(
        name=nvgre.FLOW_PORT, bridge=fabric.overlay.bridge, role=Role.TUNNEL_FLOW,
        iface_type="gre",
        options={"remote_ip": "flow", "local_ip": str(host.pa.ip), "csum": "false",
                 "key": "flow"},
        external_ids=owner_ids(fabric, Role.TUNNEL_FLOW))


def receive_port(fabric: Fabric, peer_name: str, base_options: dict[str, str]) -> PortSpec:
    """The receive-only port towards ``peer_name`` beside its fixed-key ports (per-vsid).

    A fixed-key port (``key=VSID<<8``) receives only FlowID 0: OVS matches a
    received key exactly.  RFC 7637 section 3.2 lets a sender put any FlowID in
    the low 8 bits, and the tenant is the top 24 alone.  OVS looks a received
    frame up among the ports with a fixed ``in_key`` first and only then among
    those with ``in_key=flow`` (ovs-vswitchd.conf.db(5), "Tunnel Options": the
    more specific port is matched first), so this port, same ``remote_ip`` and
    ``local_ip`` with ``in_key=flow``, gets exactly the frames no fixed-key port
    takes, and the classify stage gives them their VSID from the masked
    ``tun_id``.  No flow outputs to it, and it carries no BFD.
    """
    return PortSpec(
        name=nvgre.receive_port_name(fabric.hosts[peer_name].pa.ip),
        bridge=fabric.overlay.bridge, role=Role.TUNNEL_RECEIVE, iface_type="gre",
        options={**base_options, "in_key": "flow"},
        external_ids=owner_ids(fabric, Role.TUNNEL_RECEIVE, **{PEER_KEY: peer_name}))


def peer_routes(fabric: Fabric, host: Host) -> list[RouteSpec]:
    """Routes to the PA subnets of the other hosts that are not on-link, via the gateway."""
    if host.gateway is None:
        return []
    networks = {other.pa.network for other in fabric.hosts.values()
                if other.pa.network != host.pa.network}
    return [RouteSpec(dst=network, gateway=host.gateway)
            for network in sorted(networks, key=lambda n: (int(n.network_address), n.prefixlen))]
