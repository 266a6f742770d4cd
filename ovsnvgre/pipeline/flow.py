"""One OpenFlow flow as a plain value, in the canonical form `ovs-ofctl dump-flows` prints.

Installed and desired flows compare as values: the match is a set of tokens,
the actions one string, both spelled as `ovs-ofctl dump-flows --names` prints them.
``Flow.dump_line`` is the whole flow as that dump prints it, fields in OVS's own
order, so that a converged bridge is recognised by comparing lines of text: no
dumped flow needs parsing unless it differs (``parse_dump_line``).
"""

from __future__ import annotations

import re
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
# Which part of a VSID's flood list a frame is at (forward.py): 0 for every other frame.
REG_FLOOD_PART = "reg3"

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

# The order in which ovs-ofctl prints a match's fields: match_format() in OVS's
# lib/match.c (3.1; its format_flow_tunnel() for the tun_* fields).  A field not
# listed goes last: its flow then reads differently from the dump and takes the slow
# path of the comparison (parsed, compared as values), which is still exact.
_FIELD_ORDER = (
    "pkt_mark", "recirc_id", "dp_hash", "conj_id", "skb_priority", "actset_output",
    "ct_state", "ct_zone", "ct_mark", "ct_label", "ct_nw_src", "ct_ipv6_src", "ct_nw_dst",
    "ct_ipv6_dst", "ct_nw_proto", "ct_tp_src", "ct_tp_dst", "packet_type",
    "icmp", "tcp", "udp", "sctp", "ip", "icmp6", "tcp6", "udp6", "sctp6", "ipv6", "arp",
    "rarp", "mpls", "mplsm",
    *(f"reg{i}" for i in range(16)),
    "tun_id", "tun_src", "tun_dst", "tun_ipv6_src", "tun_ipv6_dst", "tun_gbp_id",
    "tun_gbp_flags", "tun_tos", "tun_ttl", "tun_erspan_ver", "tun_erspan_idx",
    "tun_erspan_dir", "tun_erspan_hwid", "gtpu_flags", "gtpu_msgtype", "tun_flags",
    "metadata", "in_port", "dl_vlan", "dl_vlan_pcp", "vlan_tci", "dl_src", "dl_dst",
    "dl_type", "ipv6_src", "ipv6_dst", "ipv6_label", "arp_spa", "arp_tpa", "nw_src",
    "nw_dst", "nw_proto", "arp_op", "arp_sha", "arp_tha", "nw_tos", "nw_ecn", "nw_ttl",
    "mpls_label", "mpls_tc", "mpls_ttl", "mpls_bos", "mpls_lse1", "mpls_lse2", "nw_frag",
    "icmp_type", "icmp_code", "nd_target", "nd_sll", "nd_tll", "nd_reserved",
    "nd_options_type", "tp_src", "tp_dst", "tcp_flags",
)
_RANK = {name: rank for rank, name in enumerate(_FIELD_ORDER)}
_UNKNOWN = len(_FIELD_ORDER)
# OFP_DEFAULT_PRIORITY: ovs-ofctl leaves it out of the match it prints.
DEFAULT_PRIORITY = 32768
# Every line of `dump-flows --no-stats` of ovsnvgre's cookie starts so.
DUMP_PREFIX = f" cookie={COOKIE:#x}, "


def _ordered(match: frozenset[str]) -> list[str]:
    return sorted(match, key=lambda token: (token not in _PROTOCOLS, token))


# Sort keys by token: most tokens (a VSID's register, a protocol) recur in many flows.
_RANKS: dict[str, tuple[int, str]] = {}
_RANKS_KEPT = 1 << 17


def _rank(token: str) -> tuple[int, str]:
    rank = _RANKS.get(token)
    if rank is None:
        if len(_RANKS) >= _RANKS_KEPT:
            _RANKS.clear()
        rank = _RANKS[token] = (_RANK.get(token.partition("=")[0], _UNKNOWN), token)
    return rank


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

    @property
    def dump_line(self) -> str:
        """The flow as `ovs-ofctl -O OpenFlow13 --no-stats --names dump-flows` prints it
        with ovsnvgre's cookie, quotes around port names left out (see parse_dump_line):
        `` cookie=0x..., table=T, priority=100,reg0=0x1389,dl_dst=... actions=...``.

        Fields in OVS's order (match_format, lib/match.c); table 0 and the default
        priority are not printed, as OVS does not print them.  Formatted once per
        Flow (kept beside its fields: functools.cached_property costs twice as much).
        """
        line = self.__dict__.get("_dump_line")
        if line is None:
            line = self.__dict__["_dump_line"] = self._format_dump_line()
        return line

    def _format_dump_line(self) -> str:
        fields = sorted(self.match, key=_rank)
        if self.priority != DEFAULT_PRIORITY:
            fields.insert(0, f"priority={self.priority}")
        table = f"table={self.table}, " if self.table else ""
        match = ",".join(fields)
        return f"{DUMP_PREFIX}{table}{match}{' ' if match else ''}actions={self.actions}"

    def add_line(self) -> str:
        """The flow as an `add` line of an `ovs-ofctl bundle` file, with ovsnvgre's cookie
        (the dump's own form: ovs-ofctl reads fields separated by commas or spaces)."""
        return f"add{self.dump_line}"

    def delete_line(self) -> str:
        """The flow as a `delete_strict` line that only matches ovsnvgre's cookie."""
        match = f",{self.match_text()}" if self.match else ""
        return (f"delete_strict table={self.table},priority={self.priority},"
                f"cookie={COOKIE:#x}/{DELETE_COOKIE_MASK:#x}{match}")


# The form every flow ovsnvgre installs dumps in: cookie, table (absent for 0),
# priority, then the match fields with no spaces.  Anything else takes the general path.
_CANONICAL = re.compile(r"cookie=0x[0-9a-f]+, (?:table=(\d+), )?priority=(\d+)(?:,([^ ]*))?$")


def parse_dump_line(line: str) -> Flow | None:
    """One line of `dump-flows --no-stats --names`, or None for headers.

    ovs-ofctl quotes port names that hold characters like '-'; it reads them back
    unquoted too, and port names never hold a quote, so quotes are dropped.
    """
    line = line.strip().replace('"', "")
    head, found, actions = line.partition(" actions=")
    if not found:
        return None
    canonical = _CANONICAL.match(head)
    if canonical:
        table, priority, match = canonical.groups()
        return Flow(int(table or 0), int(priority),
                    frozenset(match.split(",")) if match else frozenset(), actions)
    table, priority = 0, DEFAULT_PRIORITY
    tokens: set[str] = set()
    for token in head.replace(", ", ",").split(","):
        if not token:
            continue
        name, _, value = token.partition("=")
        if name == "cookie":
            continue
        if name == "table":
            table = int(value)
        elif name == "priority":
            priority = int(value)
        else:
            tokens.add(token)
    return Flow(table, priority, frozenset(tokens), actions)


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
