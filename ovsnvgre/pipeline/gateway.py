"""Stage `gateway`: the distributed router's own addresses, answered on the VM's host.

Each routed subnet's gateway is its prefix's first host address, and every host's
router owns them all, with the one fabric-wide ``router_mac`` (HNV's distributed
router; OVN's "ARP/ND responder" and "IP Input" echo replies in ovn-northd(8)).
Only frames classify handed to the router come here: a routed VM's ARP request for
its own subnet's gateway, and IPv4 it sent to ``router_mac`` (with its routing domain
in ``REG_DOMAIN``).  A VM outside the domain never reaches these flows, so an L2-only
subnet may use a gateway's address for a VM of its own.
"""

from __future__ import annotations

from ovsnvgre.model import VirtualSubnet
from ovsnvgre.pipeline.flow import (
    PRIORITY_DEFAULT,
    PRIORITY_EXACT,
    PRIORITY_FLOOD,
    Flow,
    in_domain,
    in_vsid,
    make,
)
from ovsnvgre.pipeline.stage import Context, Stage

# A Linux router's own packets (net.ipv4.ip_default_ttl).
REPLY_TTL = 64


def _flows(context: Context, table: int) -> set[Flow]:
    # What is not for the router itself is to be routed.
    flows = {make(table, PRIORITY_DEFAULT, [], [context.goto("ttl")])}
    router_mac = context.fabric.overlay.router_mac
    for domain in context.local_domains:
        number = context.domain_numbers[domain]
        for subnet in context.fabric.subnets_in(domain):
            if subnet.vsid in context.local_of:
                flows.add(_arp_reply(table, subnet, router_mac))
            flows |= _echo_reply(table, number, subnet, router_mac)
    return flows


def _arp_reply(table: int, subnet: VirtualSubnet, router_mac: str) -> Flow:
    """The ARP reply for ``subnet``'s gateway, to a VM of that subnet only (RFC 826)."""
    gateway = subnet.gateway
    return make(table, PRIORITY_EXACT, ["arp", in_vsid(subnet.vsid), "arp_op=1",
                                        f"arp_tpa={gateway}"], [
        "move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[]",
        f"set_field:{router_mac}->eth_src",
        "set_field:2->arp_op",
        "move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[]",
        f"set_field:{router_mac}->arp_sha",
        "move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[]",
        f"set_field:{gateway}->arp_spa",
        "IN_PORT",
    ])


def _echo_reply(table: int, number: int, subnet: VirtualSubnet, router_mac: str
                ) -> set[Flow]:
    """The echo reply (RFC 792) from ``subnet``'s gateway to any VM of the routing domain,
    as a router answers on each of its interfaces; anything else to it is dropped.

    Setting icmp_type makes ovs-vswitchd handle these packets itself (its datapaths have
    no action for an ICMP header: odp-util's commit_set_icmp_action is SLOW_ACTION),
    which fixes the checksum, on both datapaths: a ping, not a stream."""
    gateway = subnet.gateway
    to_gateway = [in_domain(number), f"nw_dst={gateway}"]
    return {
        make(table, PRIORITY_EXACT, ["icmp", *to_gateway, "icmp_type=8", "icmp_code=0"], [
            "move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[]",
            f"set_field:{router_mac}->eth_src",
            "move:NXM_OF_IP_SRC[]->NXM_OF_IP_DST[]",
            f"set_field:{gateway}->ip_src",
            f"set_field:{REPLY_TTL}->nw_ttl",
            "set_field:0->icmp_type",
            "IN_PORT",
        ]),
        make(table, PRIORITY_FLOOD, ["ip", *to_gateway], []),
    }


STAGE = Stage(
    name="gateway",
    decides="the distributed router's own addresses, on the VM's own host: an ARP request "
            "for a routed subnet's gateway (its prefix's first host address) from a VM of that "
            "subnet is answered with `router_mac`; an ICMP echo request to any gateway of the "
            "VM's routing domain is answered from that gateway; neither crosses a tunnel, and "
            "neither is answered for a VM outside the domain. Other IPv4 to a gateway is "
            "dropped; the rest goes on to be routed (`ttl`).",
    drop_reason="the distributed router answers only ARP and ICMP echo (ping) for its gateway "
                "addresses",
    flows=_flows,
)
