"""Stage `classify`: which VSID a frame belongs to, or drop it."""

from __future__ import annotations

import ipaddress

from ovsnvgre import nvgre
from ovsnvgre.model import Vm
from ovsnvgre.pipeline.flow import (
    PRIORITY_DEFAULT,
    PRIORITY_EXACT,
    PRIORITY_OVERRIDE,
    Flow,
    make,
    set_domain,
    set_vsid,
)
from ovsnvgre.pipeline.stage import Context, Stage, keyed_by_flow


def vm_ipv4(vm: Vm) -> ipaddress.IPv4Address | None:
    """The VM's CA if it is IPv4 (ARP exists only for IPv4)."""
    return vm.ca.ip if isinstance(vm.ca.ip, ipaddress.IPv4Address) else None


def _flows(context: Context, table: int) -> set[Flow]:
    flows = {make(table, PRIORITY_DEFAULT, [], [])}
    layout = context.fabric.overlay.key_layout
    for port in context.tunnels:
        if port.name in context.tunnel_sources:
            flows |= _from_every_peer(context, table, port.name)
            continue
        by_key = keyed_by_flow(port)
        for vsid in context.tunnel_vsids[port.name]:
            match = [f"in_port={port.name}"]
            if by_key:
                # RFC 7637 section 3.2: the tenant is the key's top 24 bits, whatever the FlowID.
                match.append(nvgre.key_match(vsid, layout))
            flows.add(make(table, PRIORITY_EXACT, match,
                           [*set_vsid(vsid, True), context.goto("forward")]))
    for vm in context.local_vms:
        flows |= _classify_vm(context, table, vm)
    return flows


def _from_every_peer(context: Context, table: int, port: str) -> set[Flow]:
    """A port that takes frames from any remote (remote_ip=flow): a frame belongs to
    a VSID only when its outer source (``tun_src``) is the PA of a peer that shares
    that VSID with this host, as a port per peer would have it; anything else,
    a host of no fabric included, is dropped."""
    layout = context.fabric.overlay.key_layout
    flows = set()
    for pa, vsids in context.tunnel_sources[port].items():
        for vsid in vsids:
            flows.add(make(table, PRIORITY_EXACT,
                           [f"in_port={port}", f"tun_src={pa}", nvgre.key_match(vsid, layout)],
                           [*set_vsid(vsid, True), context.goto("forward")]))
    return flows


def _classify_vm(context: Context, table: int, vm: Vm) -> set[Flow]:
    vsid = context.fabric.vsid_of(vm)
    mine = [f"in_port={vm.port}", f"dl_src={vm.mac}"]
    to_forward = [*set_vsid(vsid, False), context.goto("forward")]
    flows = {
        # IPv6 link-local traffic and neighbour discovery from the VM's own MAC.
        make(table, PRIORITY_EXACT, ["ipv6", *mine, "ipv6_src=fe80::/10"], to_forward),
        # Duplicate address detection and MLD reports come from the unspecified address.
        make(table, PRIORITY_EXACT, ["icmp6", *mine, "ipv6_src=::", "icmp_type=135"],
             to_forward),
        make(table, PRIORITY_EXACT, ["icmp6", *mine, "ipv6_src=::", "icmp_type=143"],
             to_forward),
    }
    ipv4 = vm_ipv4(vm)
    if ipv4 is not None:
        flows.add(make(table, PRIORITY_EXACT,
                       ["arp", *mine, f"arp_spa={ipv4}", f"arp_sha={vm.mac}"],
                       [*set_vsid(vsid, False), context.goto("arp_responder")]))
        flows.add(make(table, PRIORITY_EXACT, ["ip", *mine, f"nw_src={ipv4}"], to_forward))
        flows |= _to_router(context, table, vm, ipv4, mine)
    else:
        flows.add(make(table, PRIORITY_EXACT, ["ipv6", *mine, f"ipv6_src={vm.ca.ip}"],
                       to_forward))
    return flows


def _to_router(context: Context, table: int, vm: Vm, ipv4: ipaddress.IPv4Address,
               mine: list[str]) -> set[Flow]:
    """A routed VM's frames for its distributed router: IPv4 sent to the router's MAC,
    and ARP requests for its subnet's gateway (whatever their destination MAC: Linux
    re-validates a neighbour with a unicast request).  The same anti-spoofing holds."""
    fabric = context.fabric
    subnet = fabric.virtual_subnets[vm.virtual_subnet]
    if subnet.routing_domain is None:
        return set()
    vsid = subnet.vsid
    return {
        make(table, PRIORITY_OVERRIDE,
             ["ip", *mine, f"nw_src={ipv4}", f"dl_dst={fabric.overlay.router_mac}"],
             [*set_vsid(vsid, False), set_domain(context.domain_numbers[subnet.routing_domain]),
              context.goto("gateway")]),
        make(table, PRIORITY_OVERRIDE,
             ["arp", *mine, f"arp_spa={ipv4}", f"arp_sha={vm.mac}", "arp_op=1",
              f"arp_tpa={subnet.gateway}"],
             [*set_vsid(vsid, False), context.goto("gateway")]),
    }


STAGE = Stage(
    name="classify",
    decides="a frame from a VM port belongs to that VM's VSID **only if** it carries the VM's "
            "MAC and, for IPv4 and ARP, its CA (anti-spoofing; IPv6 link-local and neighbour "
            "discovery from its own MAC pass); a VM of a routed subnet hands its IPv4 frames to "
            "`router_mac`, and its ARP requests for its gateway, to the distributed router "
            "(`gateway`) with its routing domain; a frame from a tunnel belongs to the VSID of its "
            "fixed-key port (per-vsid, FlowID 0) or of the top 24 bits of its key (per-peer, "
            "and per-vsid's receive-only port that takes every other FlowID: the FlowID is "
            "ignored); on the flow port, only from the PA (`tun_src`) of a peer that shares "
            "that VSID. Anything else is dropped.",
    drop_reason="it is not what the fabric allows from {source} (MAC, address or protocol)",
    flows=_flows,
    incremental=True,
)
