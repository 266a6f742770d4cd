"""A routing domain's external side on its gateway host, as data (issue 19).  Pure.

Neutron's L3-agent model: each routing domain with ``external`` gets, on its gateway
host, a network namespace of its own (``ovsnvgre-<fabric>-<domain>``) with two links:

    br-int --gw<hash> (veth)-- int0 [namespace: routes, nftables NAT and filter] ext0
                                                         (macvlan, private) -- nic

``int0`` faces the overlay: the distributed routers send it the domain's packets for
outside destinations (to ``gateway_mac``), and it sends the replies to each subnet's
gateway address, a permanent neighbour with the fabric's ``router_mac``, so they enter
the gateway host's distributed router.  ``ext0`` faces the external network: it holds
the SNAT address and the floating IPs (so the kernel answers ARP for them) and the
default route via ``gateway`` (resolved by ARP).  The namespace's own conntrack table
keeps each domain's connections apart from every other's.  The nftables ruleset
(``ruleset``) is the domain's NAT and filter; the namespace holds nothing else, so the
ruleset owns the namespace's whole netfilter.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass, field

from ovsnvgre import nvgre
from ovsnvgre.model import Fabric, RoutingDomain

# The links inside a domain's namespace: private to it, so fixed names.
INSIDE_LINK = "int0"
OUTSIDE_LINK = "ext0"
NETNS_PREFIX = "ovsnvgre-"
NFT_TABLE = "ovsnvgre"  # family ip
DIGEST_WORD = "rules="
LISTED_WORD = "listed="
# The sysctls of the namespace (/proc/sys/net relative paths): it forwards IPv4 and
# has no IPv6 (nothing of the design carries it; no link-local chatter on either side).
SYSCTLS = {"ipv4/ip_forward": "1", "ipv6/conf/all/disable_ipv6": "1",
           "ipv6/conf/default/disable_ipv6": "1", f"ipv6/conf/{INSIDE_LINK}/disable_ipv6": "1",
           f"ipv6/conf/{OUTSIDE_LINK}/disable_ipv6": "1"}


def _digest(fabric: Fabric, domain: str, what: str) -> bytes:
    return hashlib.sha256(f"{fabric.name}\0{domain}\0{what}".encode()).digest()


def _mac(digest: bytes) -> str:
    # Locally administered unicast (IEEE 802: lowest bit of the first octet clear, the
    # next one set); 0x06 sets apart these from the VMs' usual 02 and 52 prefixes.
    return ":".join(f"{octet:02x}" for octet in (0x06, *digest[:5]))


def netns_name(fabric: Fabric, domain: str) -> str:
    """The domain's namespace on its gateway host: ``ovsnvgre-<fabric>-<domain>``."""
    return f"{NETNS_PREFIX}{fabric.name}-{domain}"


def bridge_port(fabric: Fabric, domain: str) -> str:
    """The veth end on the integration bridge: ``gw`` + 8 hex digits of a hash of fabric
    and domain (10 characters, under the kernel's 15)."""
    return "gw" + _digest(fabric, domain, "port").hex()[:8]


def gateway_mac(fabric: Fabric, domain: str) -> str:
    """The MAC of the namespace's overlay side (``int0``): where the distributed routers
    of the domain send packets for outside destinations."""
    return _mac(_digest(fabric, domain, "inside"))


def outside_mac(fabric: Fabric, domain: str) -> str:
    """The MAC of the namespace's external side (``ext0``): fixed, so the outside's ARP
    caches stay valid when the link is made again."""
    return _mac(_digest(fabric, domain, "outside"))


@dataclass(frozen=True)
class ExternalSide:
    """What one routing domain's namespace on the gateway host should hold.

    ``addresses``: those of ``ext0`` (the SNAT address first, then each floating IP as a
    /32); ``inside_routes``: each subnet prefix with its gateway address as the next hop
    (on ``int0``, a permanent neighbour at ``router_mac``); ``mtu``: int0's and the
    bridge port's, what a VM's packet may be once tunnelled; ``ruleset``: the nftables
    text (``nft -f``); ``marker``: int0's ifalias, the namespace's ownership mark.
    """

    domain: str
    netns: str
    bridge_port: str
    nic: str
    gateway_mac: str
    outside_mac: str
    router_mac: str
    addresses: tuple[ipaddress.IPv4Interface, ...]
    gateway: ipaddress.IPv4Address
    inside_routes: tuple[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address], ...]
    mtu: int
    ruleset: str
    marker: str

    @property
    def snat(self) -> ipaddress.IPv4Address:
        """The domain's SNAT address."""
        return self.addresses[0].ip


def marker(fabric: Fabric, host: str, domain: str) -> str:
    """The ownership mark on a domain's ``int0`` (its ifalias) and its ruleset's table:
    this fabric's, made by gateway host ``host`` (in the lab every host's namespaces
    share one /run/netns)."""
    return f"ovsnvgre-fabric={fabric.name} host={host} domain={domain}"


def sides(fabric: Fabric, host: str, nic_addresses: frozenset[ipaddress.IPv4Address] = frozenset()
          ) -> dict[str, ExternalSide]:
    """The external sides ``host`` serves, by domain name, in file order.

    ``nic_addresses``: the gateway host's own IPv4 addresses (read from the kernel: on
    its external NICs, its PA, its management address...), which no VM may reach."""
    return {domain.name: side(fabric, domain, nic_addresses)
            for domain in fabric.gateway_domains(host)}


def side(fabric: Fabric, domain: RoutingDomain,
         nic_addresses: frozenset[ipaddress.IPv4Address] = frozenset()) -> ExternalSide:
    """The external side of ``domain`` (which has ``external``)."""
    external = domain.external
    assert external is not None  # noqa: S101 - callers pass gateway domains only
    addresses = (external.address, *(ipaddress.IPv4Interface(f"{ip}/32")
                                     for ip in external.floating_ips.values()))
    routes = tuple((subnet.prefix, subnet.gateway) for subnet in fabric.subnets_in(domain.name)
                   if subnet.prefix is not None and subnet.gateway is not None)
    mtu = fabric.overlay.vm_mtu or nvgre.max_vm_mtu(fabric.underlay.mtu)
    return ExternalSide(
        domain=domain.name, netns=netns_name(fabric, domain.name),
        bridge_port=bridge_port(fabric, domain.name), nic=external.nic,
        gateway_mac=gateway_mac(fabric, domain.name),
        outside_mac=outside_mac(fabric, domain.name), router_mac=fabric.overlay.router_mac,
        addresses=addresses, gateway=external.gateway, inside_routes=routes, mtu=mtu,
        ruleset=ruleset(fabric, domain, blocked(fabric, domain, nic_addresses)),
        marker=marker(fabric, external.host, domain.name))


def blocked(fabric: Fabric, domain: RoutingDomain,
            nic_addresses: frozenset[ipaddress.IPv4Address] = frozenset()
            ) -> list[ipaddress.IPv4Address]:
    """The addresses the domain's VMs may not reach through the gateway: every host's PA
    and underlay gateway, the other domains' external addresses, and the gateway host's
    own addresses (``nic_addresses``); sorted, without duplicates."""
    found: set[ipaddress.IPv4Address] = set(nic_addresses)
    for host in fabric.hosts.values():
        found.add(host.pa.ip)
        if host.gateway is not None:
            found.add(host.gateway)
    for other in fabric.routing_domains.values():
        if other.name != domain.name and other.external is not None:
            found.add(other.external.address.ip)
            found.update(other.external.floating_ips.values())
    return sorted(found)


def why_blocked(fabric: Fabric, domain: RoutingDomain, address: str) -> str | None:
    """What ``address`` is when it is in ``domain``'s blocked set (the gateway host's own
    addresses aside: only that host reads them), e.g. ``the PA of host host3``; or None."""
    ip = ipaddress.ip_address(address)
    for host in fabric.hosts.values():
        if ip == host.pa.ip:
            return f"the PA of host {host.name}"
        if ip == host.gateway:
            return f"the underlay gateway of host {host.name}"
    for other in fabric.routing_domains.values():
        if other.name != domain.name and other.external is not None:
            if ip == other.external.address.ip:
                return f"routing domain {other.name}'s SNAT address"
            if ip in other.external.floating_ips.values():
                return f"routing domain {other.name}'s floating IP"
    return None


def ruleset(fabric: Fabric, domain: RoutingDomain,
            blocked_addresses: list[ipaddress.IPv4Address]) -> str:
    """The nftables ruleset of ``domain``'s namespace, as ``nft -f`` reads it.

    nat: each floating IP 1:1 both ways (dnat on the way in, snat on the way out), every
    other connection from the VMs SNATed to the domain's address.  filter, policy drop:
    forwarded from the VMs to anything outside but ``blocked_addresses``; from outside
    only replies and related ICMP (``ct state``) and connections to a floating IP
    (``ct status dnat``), so an outside router that routes a tenant prefix towards the
    SNAT address reaches nothing; to the namespace itself only ICMP echo and replies.
    The table is declared, deleted and declared again in one file: nft applies the whole
    file as one transaction, so the ruleset is replaced atomically, whatever was there.
    """
    external = domain.external
    assert external is not None  # noqa: S101 - callers pass gateway domains only
    inside, outside = INSIDE_LINK, OUTSIDE_LINK
    vms = fabric.vms
    dnat = [f'        iifname "{outside}" ip daddr {ip} dnat to {vms[vm].ca.ip}'
            for vm, ip in external.floating_ips.items()]
    snat = [f'        oifname "{outside}" ip saddr {vms[vm].ca.ip} snat to {ip}'
            for vm, ip in external.floating_ips.items()]
    snat.append(f'        oifname "{outside}" snat to {external.address.ip}')
    elements = ", ".join(str(ip) for ip in blocked_addresses)
    blocked_set = ([f"    set blocked {{ type ipv4_addr; elements = {{ {elements} }}; }}"]
                   if blocked_addresses else ["    set blocked { type ipv4_addr; }"])
    body = [
        *blocked_set,
        "    chain prerouting {",
        "        type nat hook prerouting priority dstnat; policy accept;",
        *dnat,
        "    }",
        "    chain postrouting {",
        "        type nat hook postrouting priority srcnat; policy accept;",
        *snat,
        "    }",
        "    chain forward {",
        "        type filter hook forward priority filter; policy drop;",
        "        ct state established,related accept",
        f'        iifname "{inside}" oifname "{outside}" ip daddr @blocked drop',
        f'        iifname "{inside}" oifname "{outside}" accept',
        f'        iifname "{outside}" oifname "{inside}" ct status dnat accept',
        "    }",
        "    chain input {",
        "        type filter hook input priority filter; policy drop;",
        '        iifname "lo" accept',
        "        ct state established,related accept",
        "        icmp type echo-request accept",
        "    }",
    ]
    # The table's comment carries a digest of the rules: reading it back tells whether
    # the namespace holds this very ruleset (nft lists rules in its own spelling).
    digest = hashlib.sha256("\n".join(body).encode()).hexdigest()[:16]
    lines = [
        f"table ip {NFT_TABLE} {{}}",
        f"delete table ip {NFT_TABLE}",
        f"table ip {NFT_TABLE} {{",
        f'    comment "{marker(fabric, external.host, domain.name)} {DIGEST_WORD}{digest}"',
        *body,
        "}",
    ]
    return "\n".join(lines) + "\n"


def ruleset_digest(text: str) -> str | None:
    """The digest a ruleset (as ``ruleset`` writes it, or as ``nft list table`` prints it)
    carries in its table comment, or None.

    A listing whose comment also records the digest of the listing itself (``listed=``,
    ``with_listing``) yields its digest only while the rules listed are still exactly
    those: a rule, set element or chain added or changed by hand gives None (drift)."""
    found = re.search(rf'comment "[^"]*{DIGEST_WORD}([0-9a-f]+)', text)
    if not found:
        return None
    listed = re.search(rf'comment "[^"]*{LISTED_WORD}([0-9a-f]+)"', text)
    if listed is not None and listed.group(1) != listing_digest(text):
        return None
    return found.group(1)


def listing_digest(listing: str) -> str:
    """A digest of ``nft list table`` output, the table's comment line left out (it
    carries this very digest)."""
    body = "\n".join(line for line in listing.splitlines()
                     if not line.strip().startswith("comment "))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def with_listing(text: str, listing: str) -> str:
    """``text`` (a ``ruleset``) whose table comment also records the digest of
    ``listing``, what nft listed once ``text`` was installed: nft spells rules its own
    way, so what is installed is compared with what nft itself listed."""
    return re.sub(rf'({DIGEST_WORD}[0-9a-f]+)"', rf'\1 {LISTED_WORD}{listing_digest(listing)}"',
                  text, count=1)


@dataclass(frozen=True)
class ActualSide:
    """What a domain's namespace holds now (``exists`` False: no such namespace).

    ``inside``/``outside``: (MAC, MTU, up, ifalias) of int0/ext0, or None when absent;
    ``routes``: (destination, gateway or None, link name) of the main table, kernel
    routes of the links' own prefixes left out; ``neighbours``: permanent (address,
    MAC) on int0; ``translations``: the namespace's conntrack entries."""

    netns: str
    exists: bool
    bridge_port: bool = False
    inside: tuple[str, int, bool, str] | None = None
    outside: tuple[str, int, bool, str] | None = None
    addresses: frozenset[ipaddress.IPv4Interface] = frozenset()
    routes: frozenset[tuple[str, str | None, str]] = frozenset()
    neighbours: frozenset[tuple[str, str]] = frozenset()
    sysctls: dict[str, str] = field(default_factory=dict)
    ruleset_digest: str | None = None
    translations: int | None = None

    @property
    def marker(self) -> str | None:
        """The ownership mark on int0, or None."""
        return self.inside[3] if self.inside else None


def wanted_routes(side: ExternalSide) -> frozenset[tuple[str, str | None, str]]:
    """The routes of ``side`` as ``read`` reports them."""
    return frozenset({("0.0.0.0/0", str(side.gateway), OUTSIDE_LINK),
                      *((str(prefix), str(gateway), INSIDE_LINK)
                        for prefix, gateway in side.inside_routes)})


def wanted_neighbours(side: ExternalSide) -> frozenset[tuple[str, str]]:
    """The permanent neighbours of ``side`` as ``read`` reports them."""
    return frozenset((str(gateway), side.router_mac) for _, gateway in side.inside_routes)


@dataclass(frozen=True)
class ExternalChange:
    """One change to a domain's namespace: ``action`` is ``create`` (all of it),
    ``links`` (int0, ext0 and the bridge port made again, then the rest), ``sysctls``,
    ``addresses``, ``routes``, ``neighbours``, ``ruleset``, or ``delete`` (all of it);
    ``side`` is what it should hold (None for ``delete``)."""

    domain: str
    netns: str
    action: str
    side: ExternalSide | None = None
    bridge_port: str | None = None

    def describe(self) -> str:
        """One line for `plan` and `up`."""
        if self.action == "create":
            return f"create namespace {self.netns} (routing domain {self.domain}'s external side)"
        if self.action == "delete":
            return f"delete namespace {self.netns} with its links, NAT rules and conntrack state"
        return f"set {self.action} of namespace {self.netns}"


def diff(side: ExternalSide, actual: ActualSide) -> list[ExternalChange]:
    """What makes ``actual`` hold ``side``: nothing when it does already."""
    def change(action: str) -> ExternalChange:
        return ExternalChange(side.domain, side.netns, action, side, side.bridge_port)

    if not actual.exists:
        return [change("create")]
    changes = []
    inside = (side.gateway_mac, side.mtu, True, side.marker)
    outside_mark = f"{side.marker} nic={side.nic}"
    if (not actual.bridge_port or actual.inside != inside or actual.outside is None
            or actual.outside[0] != side.outside_mac or actual.outside[2:] != (True, outside_mark)):
        changes.append(change("links"))
    if actual.sysctls != SYSCTLS:
        changes.append(change("sysctls"))
    if actual.addresses != frozenset(side.addresses):
        changes.append(change("addresses"))
    if actual.routes != wanted_routes(side):
        changes.append(change("routes"))
    if actual.neighbours != wanted_neighbours(side):
        changes.append(change("neighbours"))
    if actual.ruleset_digest != ruleset_digest(side.ruleset):
        changes.append(change("ruleset"))
    return changes


def owned(fabric: Fabric, host: str, netns: str, actual_marker: str | None) -> bool:
    """Whether the namespace ``netns`` (with int0's mark ``actual_marker``) is this
    fabric's on ``host``: its mark names both, or, with no mark (no int0, or an empty
    ifalias: a run killed between making the links and marking them), its name is that
    of a domain whose gateway ``host`` is."""
    if actual_marker:
        return actual_marker.startswith(f"ovsnvgre-fabric={fabric.name} host={host} ")
    return netns in {netns_name(fabric, domain.name) for domain in fabric.gateway_domains(host)}


def report(fabric: Fabric, host: str, found: dict[str, ActualSide],
           nic_addresses: frozenset[ipaddress.IPv4Address] = frozenset()
           ) -> list[dict[str, object]]:
    """Each external side of ``host`` as `status` shows it: the domain, its namespace,
    NIC, SNAT address, floating IPs, next hop, state (``up``, ``missing`` or
    ``drifted``) and translations (the connections its conntrack table holds, each one
    translated; None when the namespace cannot be read).  ``nic_addresses``: the
    host's own addresses, as ``sides`` takes them (the ruleset blocks them)."""
    rows: list[dict[str, object]] = []
    for name, side in sides(fabric, host, nic_addresses).items():
        gateway = fabric.routing_domains[name].external
        assert gateway is not None  # noqa: S101 - sides() only has gateway domains
        actual = found.get(side.netns)
        state = ("missing" if actual is None or not actual.exists
                 else "drifted" if diff(side, actual) else "up")
        rows.append({"domain": name, "namespace": side.netns, "port": side.bridge_port,
                     "nic": side.nic, "address": str(gateway.address), "gateway":
                     str(gateway.gateway), "floating_ips": {vm: str(ip) for vm, ip in
                                                             gateway.floating_ips.items()},
                     "state": state, "translations": actual.translations if actual else None})
    return rows
