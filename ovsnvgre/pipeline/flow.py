"""One OpenFlow flow as a plain value, in the canonical form `ovs-ofctl dump-flows` prints.

Installed and desired flows compare as values: the match is a set of tokens,
the actions one string, both spelled as `ovs-ofctl dump-flows --names` prints them.
"""

from __future__ import annotations

from dataclasses import dataclass

# The cookie on every flow ovsnvgre installs: "ovsnvgre" in ASCII.
COOKIE = 0x6F76736E76677265
# The cookie mask of a strict delete: every bit but the lowest.  With the full mask
# (-1) ovs-vswitchd finds the flow by walking every flow of that cookie
# (collect_rules_strict in ofproto/ofproto.c), and all of ovsnvgre's flows share one:
# deleting n of N flows cost n * N, 2.4 ms a flow at 70,000 flows (a `down` of a
# 1,000-host fabric took minutes).  With any other mask it looks the exact match up in
# the table's classifier, then checks the cookie under the mask; a foreign flow is
# still never deleted unless it has ovsnvgre's exact table, priority and match and a
# cookie that differs from ovsnvgre's in the lowest bit alone.
DELETE_COOKIE_MASK = 0xFFFFFFFFFFFFFFFE

PRIORITY_DEFAULT = 0
PRIORITY_FLOOD = 50
PRIORITY_EXACT = 100
PRIORITY_OVERRIDE = 110

# Registers every stage may read: the frame's VSID, and 1 when it came from a tunnel.
REG_VSID = "reg0"
REG_FROM_TUNNEL = "reg1"
# The routing domain (Context.domain_numbers) of a frame a VM sent to the distributed
# router: set by classify, read by the router's stages; 0 for every other frame.
REG_DOMAIN = "reg2"

# The FlowID as a hash of the inner flow, written into the key's low 8 bits after the
# VSID (ovs-actions(7), "The multipath action"; spelled as ovs-ofctl dumps it).
# symmetric_l3l4+udp hashes the IPv4 or IPv6 addresses, the protocol and the TCP, UDP or
# SCTP ports, the same in both directions; since OVS 2.10 a frame that is not IP (ARP)
# is hashed by its Ethernet addresses and type instead (flow_hash_symmetric_l3l4 in
# lib/flow.c; the manual still says such frames hash to 0).  modulo_n over 256 links
# gives 0-255.  It runs while ovs-vswitchd translates a flow, so the kernel and the
# userspace datapath both carry it: they only see the key it produced.
FLOW_ID_HASH = "multipath(symmetric_l3l4+udp,0,modulo_n,256,0,NXM_NX_TUN_ID[0..7])"

# Protocol shorthands go first, as ovs-ofctl prints them.
_PROTOCOLS = ("arp", "ip", "ipv6", "icmp6", "icmp", "tcp", "udp")


def _ordered(match: frozenset[str]) -> list[str]:
    return sorted(match, key=lambda token: (token not in _PROTOCOLS, token))


@dataclass(frozen=True)
class Flow:
    """A flow of table ``table``: priority, match tokens and actions (ovs-fields(7) names)."""

    table: int
    priority: int
    match: frozenset[str]
    actions: str

    @property
    def hashes_flow_id(self) -> bool:
        """Whether the flow writes a hash of the inner flow into the key's FlowID."""
        return FLOW_ID_HASH in self.actions

    @property
    def key(self) -> tuple[int, int, frozenset[str]]:
        """What identifies the flow on the switch: table, priority and match."""
        return (self.table, self.priority, self.match)

    def match_text(self) -> str:
        """The match as ovs-ofctl prints it (protocol first)."""
        return ",".join(_ordered(self.match))

    def add_line(self) -> str:
        """The flow as an `add` line of an `ovs-ofctl bundle` file, with ovsnvgre's cookie."""
        match = f",{self.match_text()}" if self.match else ""
        return (f"add table={self.table},priority={self.priority},cookie={COOKIE:#x}{match} "
                f"actions={self.actions}")

    def delete_line(self) -> str:
        """The flow as a `delete_strict` line that only matches ovsnvgre's cookie."""
        match = f",{self.match_text()}" if self.match else ""
        return (f"delete_strict table={self.table},priority={self.priority},"
                f"cookie={COOKIE:#x}/{DELETE_COOKIE_MASK:#x}{match}")


def make(table: int, priority: int, match: list[str], actions: list[str]) -> Flow:
    """A flow from lists of match tokens and actions; no actions means drop."""
    return Flow(table, priority, frozenset(match), ",".join(actions) or "drop")


def reg(value: int) -> str:
    """A register value as ovs-ofctl prints it (0, or hex)."""
    return f"{value:#x}" if value else "0"


def in_vsid(vsid: int) -> str:
    """The match token of frames of ``vsid``."""
    return f"{REG_VSID}={reg(vsid)}"


def from_tunnel(yes: bool) -> str:
    """The match token of frames that came (or did not come) from a tunnel."""
    return f"{REG_FROM_TUNNEL}={'0x1' if yes else '0'}"


def in_domain(number: int) -> str:
    """The match token of frames for the distributed router of routing domain ``number``."""
    return f"{REG_DOMAIN}={reg(number)}"


def set_domain(number: int) -> str:
    """The action that hands a frame to the router of routing domain ``number``."""
    return f"set_field:{reg(number)}->{REG_DOMAIN}"


def set_vsid(vsid: int, from_a_tunnel: bool) -> list[str]:
    """The actions that give a frame its VSID (and mark it as from a tunnel)."""
    actions = [f"set_field:{reg(vsid)}->{REG_VSID}"]
    if from_a_tunnel:
        actions.append(f"set_field:0x1->{REG_FROM_TUNNEL}")
    return actions
