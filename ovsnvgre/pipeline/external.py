"""Stage `external`: a routing domain's way out, to its namespace on the gateway host.

The distributed router (`route`) knows every CA of the domain; a destination it has no
host route for and that lies outside every subnet prefix of the domain goes out
(issue 19).  This stage's own table sends such a packet to the domain's external side:
TTL - 1, source MAC ``router_mac``, destination MAC the namespace's (``gateway_mac``),
then out of the bridge port to the namespace on the gateway host itself, or through the
tunnel to the gateway host with the *source* subnet's VSID in the key (the packet is
that subnet's, addressed to a router that sits on the gateway host; no VSID needs to be
set aside for it).  The stage also puts flows in three tables of the stages before, so
that the others' tables keep their meaning:

- `route`: the domain's prefixes are dropped below the host routes (an address no VM
  holds never leaves), everything else of the domain goes on to this table;
- `forward`, on the gateway host: a frame from a tunnel of one of the domain's VSIDs
  for ``gateway_mac`` goes to the bridge port (split horizon holds: not to a tunnel);
- `classify`, on the gateway host: an IPv4 frame from the bridge port with the
  namespace's MAC, for ``router_mac``, enters the domain's distributed router (`ttl`,
  then `route`: the VM's port, or the tunnel with the VM's VSID); anything else from
  the namespace is dropped.
"""

from __future__ import annotations

from ovsnvgre import external
from ovsnvgre.pipeline.flow import (
    PRIORITY_DEFAULT,
    PRIORITY_EXACT,
    Flow,
    from_tunnel,
    in_domain,
    in_vsid,
    make,
    set_domain,
)
from ovsnvgre.pipeline.stage import Context, Stage

# In `route`, under its host routes (PRIORITY_EXACT) and over its default drop (0).
PRIORITY_INSIDE = 2  # a prefix of the domain: no VM holds the address, dropped
PRIORITY_OUTSIDE = 1  # anything else: out through the external side


def _flows(context: Context, table: int) -> set[Flow]:
    flows = {make(table, PRIORITY_DEFAULT, [], [])}
    fabric = context.fabric
    host = context.desired.host.name
    route = context.tables["route"]
    router_mac = fabric.overlay.router_mac
    for name in context.local_domains:
        gateway = fabric.routing_domains[name].external
        if gateway is None:
            continue
        domain = in_domain(context.domain_numbers[name])
        subnets = fabric.subnets_in(name)
        for subnet in subnets:
            flows.add(make(route, PRIORITY_INSIDE, ["ip", domain, f"nw_dst={subnet.prefix}"],
                           []))
        flows.add(make(route, PRIORITY_OUTSIDE, ["ip", domain], [context.goto("external")]))
        port = external.bridge_port(fabric, name)
        for subnet in subnets:
            if gateway.host == host:
                out = [f"output:{port}"] if port in context.live_ports else None
            else:
                out = context.tunnel_out.get((gateway.host, subnet.vsid))
            if out is None:
                continue  # not on the switch yet: dropped until it is
            flows.add(make(table, PRIORITY_EXACT, ["ip", domain, in_vsid(subnet.vsid)], [
                "dec_ttl",
                f"set_field:{router_mac}->eth_src",
                f"set_field:{external.gateway_mac(fabric, name)}->eth_dst",
                *out,
            ]))
    for gateway_domain in fabric.gateway_domains(host):
        flows |= _gateway_host(context, gateway_domain.name)
    return flows


def _gateway_host(context: Context, name: str) -> set[Flow]:
    """The flows of the gateway host for domain ``name``: into the namespace from the
    tunnels, and from the namespace into the domain's distributed router."""
    fabric = context.fabric
    port = external.bridge_port(fabric, name)
    if port not in context.live_ports:
        return set()
    mac = external.gateway_mac(fabric, name)
    flows = {make(context.tables["classify"], PRIORITY_EXACT,
                  ["ip", f"in_port={port}", f"dl_src={mac}",
                   f"dl_dst={fabric.overlay.router_mac}"],
                  [set_domain(context.domain_numbers[name]), context.goto("ttl")])}
    forward = context.tables["forward"]
    for subnet in fabric.subnets_in(name):
        flows.add(make(forward, PRIORITY_EXACT,
                       [in_vsid(subnet.vsid), from_tunnel(True), f"dl_dst={mac}"],
                       [f"output:{port}"]))
    return flows


STAGE = Stage(
    name="external",
    decides="a packet of a routing domain with an external gateway, for an address outside "
            "every subnet of the domain (`route` sends it here; an address inside them that "
            "no VM holds is dropped there), goes to the domain's namespace on its gateway "
            "host: TTL decremented, source MAC `router_mac`, destination MAC the namespace's, "
            "out of the local bridge port or through the tunnel to the gateway host with the "
            "**source** subnet's VSID. On the gateway host, `forward` hands such frames from "
            "the tunnels to the namespace, and `classify` takes the namespace's replies "
            "(IPv4 to `router_mac` only) into the domain's distributed router. Other "
            "domains' packets, and those of domains without a gateway, are dropped.",
    drop_reason="routing domain {domain} has no way out from here (no external gateway, or "
                "its tunnel or port is not on the switch)",
    flows=_flows,
)
