"""Stage `route`: the distributed router's routing, on the source host.

HNV routes between the virtual subnets of one routing domain on the host where the
packet starts, and sends it across the underlay with the *destination* subnet's VSID
in the key; OVN's "IP Routing" and "ARP Resolve" tables do the same in two steps
(ovn-northd(8)).  Here the router knows every VM's CA and MAC from the fabric, so one
flow per VM of each routing domain with a VM on this host does both: a host route to
the CA, in the source VM's domain only (``REG_DOMAIN``), so overlapping prefixes of
two domains never meet.
"""

from __future__ import annotations

from ovsnvgre.pipeline.classify import vm_ipv4
from ovsnvgre.pipeline.flow import (
    PRIORITY_DEFAULT,
    PRIORITY_EXACT,
    Flow,
    in_domain,
    make,
    set_vsid,
)
from ovsnvgre.pipeline.stage import Context, Stage


def _flows(context: Context, table: int) -> set[Flow]:
    # An address no VM of the domain holds: another domain's, or in no subnet (a
    # later issue adds external gateways).
    flows = {make(table, PRIORITY_DEFAULT, [], [])}
    fabric = context.fabric
    router_mac = fabric.overlay.router_mac
    host = context.desired.host.name
    live = {vm.port for vm in context.local_vms}
    for domain in context.local_domains:
        domain_match = in_domain(context.domain_numbers[domain])
        for vm in fabric.vms_in_domain(domain):
            ipv4 = vm_ipv4(vm)
            if ipv4 is None:
                continue
            vsid = fabric.vsid_of(vm)
            if vm.host == host:
                out = [f"output:{vm.port}"] if vm.port in live else None
            else:
                # The forward stage's way to that peer with the destination VSID's key.
                out = context.tunnel_out.get((vm.host, vsid))
            if out is None:
                continue  # not on the switch yet: dropped until it is
            flows.add(make(table, PRIORITY_EXACT, ["ip", domain_match, f"nw_dst={ipv4}"], [
                "dec_ttl",
                f"set_field:{router_mac}->eth_src",
                f"set_field:{vm.mac}->eth_dst",
                *set_vsid(vsid, False),
                *out,
            ]))
    return flows


STAGE = Stage(
    name="route",
    decides="a packet for a CA of a VM in the source VM's routing domain (looked up in that "
            "domain only) is routed on its source host: TTL decremented, source MAC "
            "`router_mac`, destination MAC the VM's, then out of the VM's local port or into "
            "the tunnel to its host with the **destination** VSID's key; the receiving host "
            "delivers it as ordinary traffic of that VSID. Any other address (another routing "
            "domain's, or in no subnet of the domain) is dropped on the source host.",
    drop_reason="no subnet of {source}'s routing domain {domain} holds {address}",
    flows=_flows,
)
