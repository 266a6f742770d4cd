"""Fabric + host + live ports -> the OpenFlow pipeline of the integration bridge.  Pure.

    VM port --CLASSIFY (port -> VSID, anti-spoofing)--> ARP_RESPONDER (ARP only)
        --> FORWARD (known unicast by VSID+MAC, else flood within the VSID)
    tunnel port --CLASSIFY (port or key -> VSID)--> FORWARD (never back into a tunnel)

reg0 holds the frame's VSID, reg1 is 1 when the frame came from a tunnel.  Every
table drops what it does not match.  Flows are written in the canonical form
`ovs-ofctl dump-flows --names` prints, so that installed and desired flows compare
as plain values.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import IntEnum

from ovsnvgre import nvgre
from ovsnvgre.desired import ROLE_TUNNEL, VSID_KEY, HostState, PortSpec
from ovsnvgre.fabric import Fabric, Vm

# The cookie on every flow ovsnvgre installs: "ovsnvgre" in ASCII.
COOKIE = 0x6F76736E76677265


class Table(IntEnum):
    """The pipeline's tables, named once."""

    # Which VSID a frame belongs to: a VM port's own VSID, if the frame carries the
    # VM's own MAC and address; a tunnel's VSID from its port or its key.
    CLASSIFY = 0
    # ARP requests from local VMs for a CA the fabric knows are answered here and
    # never cross a tunnel.
    ARP_RESPONDER = 10
    # Known unicast straight to its port or tunnel; broadcast, unknown unicast and
    # multicast to every port of the VSID, never from one tunnel into another.
    FORWARD = 20


TABLE_NAMES = {table.value: table.name.lower() for table in Table}

PRIORITY_EXACT = 100
PRIORITY_OVERRIDE = 110
PRIORITY_FLOOD = 50
PRIORITY_DEFAULT = 0


@dataclass(frozen=True)
class Flow:
    table: int
    priority: int
    match: frozenset[str]
    actions: str

    @property
    def key(self) -> tuple[int, int, frozenset[str]]:
        return (self.table, self.priority, self.match)

    def match_text(self) -> str:
        return ",".join(_ordered(self.match))

    def add_line(self) -> str:
        match = f",{self.match_text()}" if self.match else ""
        return (f"add table={self.table},priority={self.priority},cookie={COOKIE:#x}{match} "
                f"actions={self.actions}")

    def delete_line(self) -> str:
        match = f",{self.match_text()}" if self.match else ""
        return f"delete_strict table={self.table},priority={self.priority},cookie={COOKIE:#x}/-1" \
               f"{match}"

    def __str__(self) -> str:
        match = f" {self.match_text()}" if self.match else ""
        return f"{TABLE_NAMES.get(self.table, self.table)} priority={self.priority}{match} " \
               f"actions={self.actions}"


# Protocol shorthands go first, as ovs-ofctl prints them.
_PROTOCOLS = ("arp", "ip", "ipv6", "icmp6", "icmp", "tcp", "udp")


def _ordered(match: frozenset[str]) -> list[str]:
    return sorted(match, key=lambda token: (token not in _PROTOCOLS, token))


def flow(table: Table, priority: int, match: list[str], actions: list[str]) -> Flow:
    return Flow(int(table), priority, frozenset(match), ",".join(actions) or "drop")


def _reg(value: int) -> str:
    return f"{value:#x}" if value else "0"


def _set_vsid(vsid: int, from_tunnel: bool) -> list[str]:
    actions = [f"set_field:{_reg(vsid)}->reg0"]
    if from_tunnel:
        actions.append("set_field:0x1->reg1")
    return actions


def _vm_ipv4(vm: Vm) -> ipaddress.IPv4Address | None:
    return vm.ca.ip if isinstance(vm.ca.ip, ipaddress.IPv4Address) else None


def desired_flows(state: HostState, live_ports: set[str]) -> set[Flow]:
    """The whole pipeline for this host, for the ports that are on the switch now.

    A port ovs-vswitchd has not opened (no OpenFlow port) gets no flows: a flow
    that names it could not be installed, and its traffic cannot arrive anyway.
    """
    fabric = state.fabric
    host = state.host.name
    layout = fabric.overlay.key_layout
    flows: set[Flow] = {
        flow(Table.CLASSIFY, PRIORITY_DEFAULT, [], []),
        # ARP nobody answers here (replies, unknown CAs) is forwarded like any frame.
        flow(Table.ARP_RESPONDER, PRIORITY_DEFAULT, [], [f"goto_table:{int(Table.FORWARD)}"]),
        flow(Table.FORWARD, PRIORITY_DEFAULT, [], []),
    }

    local_vms = [vm for vm in fabric.vms_on(host) if vm.port in live_ports]
    tunnels = [p for p in state.ports.values() if p.role == ROLE_TUNNEL and p.name in live_ports]
    per_peer = fabric.overlay.tunnel_ports == "per-peer"

    # tunnel_out[(peer, vsid)] = the actions that send a frame of vsid to peer.
    tunnel_out: dict[tuple[str, int], list[str]] = {}
    for port in tunnels:
        peer = port.external_ids["ovsnvgre-peer"]
        vsids = _tunnel_vsids(fabric, state, port)
        for vsid in vsids:
            key = nvgre.tunnel_key(vsid, layout)
            if per_peer:
                tunnel_out[peer, vsid] = [f"set_field:{key:#x}->tun_id", f"output:{port.name}"]
                tun_match = (f"tun_id={key:#x}/0xffffff00" if layout == "rfc7637"
                             else f"tun_id={key:#x}")
                match = [tun_match, f"in_port={port.name}"]
            else:
                tunnel_out[peer, vsid] = [f"output:{port.name}"]
                match = [f"in_port={port.name}"]
            flows.add(flow(Table.CLASSIFY, PRIORITY_EXACT, match,
                           [*_set_vsid(vsid, True), f"goto_table:{int(Table.FORWARD)}"]))

    for vm in local_vms:
        flows |= _classify_vm(fabric, vm)

    members_of: dict[int, list[Vm]] = {}
    for vm in fabric.vms.values():
        members_of.setdefault(fabric.vsid_of(vm), []).append(vm)
    for vsid in sorted(fabric.vsids_on(host)):
        members = members_of[vsid]
        local = [vm for vm in local_vms if fabric.vsid_of(vm) == vsid]
        flows |= _arp_responder(vsid, members, local)
        flows |= _forward(host, vsid, members, local, tunnel_out)
    return flows


def _tunnel_vsids(fabric: Fabric, state: HostState, port: PortSpec) -> list[int]:
    if VSID_KEY in port.external_ids:
        return [int(port.external_ids[VSID_KEY])]
    peer = port.external_ids["ovsnvgre-peer"]
    return sorted(fabric.vsids_on(state.host.name) & fabric.vsids_on(peer))


def _classify_vm(fabric: Fabric, vm: Vm) -> set[Flow]:
    vsid = fabric.vsid_of(vm)
    mine = [f"in_port={vm.port}", f"dl_src={vm.mac}"]
    to_forward = [*_set_vsid(vsid, False), f"goto_table:{int(Table.FORWARD)}"]
    flows = {
        # IPv6 link-local traffic and neighbour discovery from the VM's own MAC.
        flow(Table.CLASSIFY, PRIORITY_EXACT, ["ipv6", *mine, "ipv6_src=fe80::/10"],
             to_forward),
        # Duplicate address detection and MLD reports come from the unspecified address.
        flow(Table.CLASSIFY, PRIORITY_EXACT, ["icmp6", *mine, "ipv6_src=::", "icmp_type=135"],
             to_forward),
        flow(Table.CLASSIFY, PRIORITY_EXACT, ["icmp6", *mine, "ipv6_src=::", "icmp_type=143"],
             to_forward),
    }
    ipv4 = _vm_ipv4(vm)
    if ipv4 is not None:
        flows.add(flow(Table.CLASSIFY, PRIORITY_EXACT,
                       ["arp", *mine, f"arp_spa={ipv4}", f"arp_sha={vm.mac}"],
                       [*_set_vsid(vsid, False), f"goto_table:{int(Table.ARP_RESPONDER)}"]))
        flows.add(flow(Table.CLASSIFY, PRIORITY_EXACT, ["ip", *mine, f"nw_src={ipv4}"],
                       to_forward))
    else:
        flows.add(flow(Table.CLASSIFY, PRIORITY_EXACT, ["ipv6", *mine, f"ipv6_src={vm.ca.ip}"],
                       to_forward))
    return flows


def _arp_responder(vsid: int, members: list[Vm], local_members: list[Vm]) -> set[Flow]:
    flows: set[Flow] = set()
    for vm in members:
        ipv4 = _vm_ipv4(vm)
        if ipv4 is None:
            continue
        flows.add(flow(Table.ARP_RESPONDER, PRIORITY_EXACT,
                       ["arp", f"reg0={_reg(vsid)}", f"arp_tpa={ipv4}", "arp_op=1"], [
                           "move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[]",
                           f"set_field:{vm.mac}->eth_src",
                           "set_field:2->arp_op",
                           "move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[]",
                           f"set_field:{vm.mac}->arp_sha",
                           "move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[]",
                           f"set_field:{ipv4}->arp_spa",
                           "IN_PORT",
                       ]))
    for vm in local_members:
        ipv4 = _vm_ipv4(vm)
        if ipv4 is not None:
            # A VM announcing or probing its own address is not answered with itself.
            flows.add(flow(Table.ARP_RESPONDER, PRIORITY_OVERRIDE,
                           ["arp", f"in_port={vm.port}", f"arp_tpa={ipv4}"],
                           [f"goto_table:{int(Table.FORWARD)}"]))
    return flows


def _forward(host: str, vsid: int, members: list[Vm], local_members: list[Vm],
             tunnel_out: dict[tuple[str, int], list[str]]) -> set[Flow]:
    flows: set[Flow] = set()
    in_vsid = f"reg0={_reg(vsid)}"
    local_ports = sorted(vm.port for vm in local_members)
    peers = sorted(peer for peer, v in tunnel_out if v == vsid)
    for vm in members:
        if vm.host == host:
            if vm.port in local_ports:
                flows.add(flow(Table.FORWARD, PRIORITY_EXACT, [in_vsid, f"dl_dst={vm.mac}"],
                               [f"output:{vm.port}"]))
            continue
        out = tunnel_out.get((vm.host, vsid))
        if out is None:
            continue
        flows.add(flow(Table.FORWARD, PRIORITY_EXACT, [in_vsid, "reg1=0", f"dl_dst={vm.mac}"],
                       out))
        # Split horizon: a frame from a tunnel never goes back into one.
        flows.add(flow(Table.FORWARD, PRIORITY_EXACT, [in_vsid, "reg1=0x1",
                                                       f"dl_dst={vm.mac}"], []))
    to_locals = [f"output:{port}" for port in local_ports]
    to_peers: list[str] = []
    for peer in peers:
        for action in tunnel_out[peer, vsid]:
            if action not in to_peers or action.startswith("output:"):
                to_peers.append(action)
    if to_locals or to_peers:
        flows.add(flow(Table.FORWARD, PRIORITY_FLOOD, [in_vsid, "reg1=0"], to_locals + to_peers))
    if to_locals:
        flows.add(flow(Table.FORWARD, PRIORITY_FLOOD, [in_vsid, "reg1=0x1"], to_locals))
    return flows
