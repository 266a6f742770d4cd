"""Stage `ttl`: a packet the router may not forward (TTL 1 or 0) goes no further."""

from __future__ import annotations

from ovsnvgre.pipeline.flow import PRIORITY_DEFAULT, PRIORITY_EXACT, Flow, make
from ovsnvgre.pipeline.stage import Context, Stage


def _flows(context: Context, table: int) -> set[Flow]:
    # Only frames a VM sent to the router come here (classify, gateway): no
    # per-domain match is needed.  RFC 1812 section 5.3.1: a router never forwards a
    # packet whose TTL would reach 0.  No ICMP time exceeded is sent (it would need a
    # controller to build it), so traceroute sees no answer from the router's hop.
    return {
        make(table, PRIORITY_DEFAULT, [], [context.goto("route")]),
        make(table, PRIORITY_EXACT, ["ip", "nw_ttl=0"], []),
        make(table, PRIORITY_EXACT, ["ip", "nw_ttl=1"], []),
    }


STAGE = Stage(
    name="ttl",
    decides="an IPv4 packet for the distributed router whose TTL is 1 or 0 is dropped on its "
            "source host (RFC 1812 section 5.3.1; no ICMP time exceeded is sent); the rest is "
            "routed (`route`).",
    drop_reason="its TTL is 1 or less: a router does not forward it (RFC 1812 section 5.3.1)",
    flows=_flows,
)
