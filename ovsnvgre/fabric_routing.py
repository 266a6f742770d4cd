"""Validation of the fabric's routing domains (HNV's RDIDs): the part of fabric.py that
checks ``routing_domains``, each subnet's ``prefix`` and ``routing_domain``, and each
VM's CA against its subnet's prefix.  Pure; every refusal one FabricError line naming
file, line and entry (fabric_checks.Checker).

The rules (issue 18): a subnet of a routing domain needs an IPv4 prefix; a prefix
without a domain is allowed and only checked against the subnet's VMs; the prefixes
of one domain never overlap (across domains they may: tenants choose their own
addresses); a VM's CA lies in its subnet's prefix, with that prefix length, and is
not the network, broadcast or, in a routing domain, gateway (first host) address.
"""

from __future__ import annotations

import ipaddress
import re

from ovsnvgre import fabric_external
from ovsnvgre.fabric_checks import Checker, join
from ovsnvgre.fabric_yaml import LineMap
from ovsnvgre.model import Host, RoutingDomain, VirtualSubnet

# The longest prefix a subnet may have: a /30 holds the network address, the gateway,
# one VM and the broadcast address.
MAX_SUBNET_PREFIXLEN = 30

SUBNET_KEYS = {"prefix", "routing_domain"}


def routing_domains(section: LineMap, check: Checker, hosts: dict[str, Host],
                    reserved: dict[str, str], nic_name: re.Pattern[str],
                    seen: fabric_external.Seen) -> dict[str, RoutingDomain]:
    """The ``routing_domains`` section: each entry a name with an empty mapping (or none),
    or with an ``external`` gateway (fabric_external; ``hosts``, ``reserved``,
    ``nic_name`` and ``seen`` are its)."""
    return {name: RoutingDomain(name=name, external=fabric_external.external(
                entry, path, check, hosts, reserved, nic_name, seen))
            for name, path, entry in check.entries(section, "routing_domains",
                                                   {"external"}, set(), empty_ok=True)}


def _parse_prefix(text: str) -> ipaddress.IPv4Network:
    if "/" not in text:
        raise ValueError(text)
    return ipaddress.IPv4Network(text, strict=False)


def prefix(entry: LineMap, path: str, check: Checker) -> ipaddress.IPv4Network | None:
    """A subnet entry's ``prefix`` (IPv4, no host bits, at most /30), or None when absent."""
    if "prefix" not in entry:
        return None
    where, line = join(path, "prefix"), entry.key_lines["prefix"]
    network = check.parsed(entry, "prefix", path, _parse_prefix,
                           "an IPv4 prefix (like 10.1.1.0/24)")
    written = entry.texts.get("prefix") or entry["prefix"]
    if ipaddress.IPv4Interface(written).ip != network.network_address:
        raise check.fail(where, f"{written} has host bits set; the prefix is {network}", line)
    if network.prefixlen > MAX_SUBNET_PREFIXLEN:
        raise check.fail(where, f"{network} is too small for a subnet: it needs a network, a "
                         "gateway, a VM and a broadcast address (at most "
                         f"/{MAX_SUBNET_PREFIXLEN})", line)
    return network


def routing_domain(entry: LineMap, path: str, check: Checker,
                   domains: dict[str, RoutingDomain],
                   network: ipaddress.IPv4Network | None) -> str | None:
    """A subnet entry's ``routing_domain``: a known domain's name, only with a prefix."""
    name = check.string(entry, "routing_domain", path)
    if name is None:
        return None
    where, line = join(path, "routing_domain"), entry.key_lines["routing_domain"]
    if name not in domains:
        known = ", ".join(domains) or "none defined"
        raise check.fail(where, f"unknown routing domain {name!r} (routing_domains: {known})",
                         line)
    if network is None:
        raise check.fail(where, "a subnet of a routing domain needs a prefix (its gateway is "
                         "the prefix's first host address)", line)
    return name


def no_overlap(subnets: dict[str, VirtualSubnet], lines: dict[str, int],
               check: Checker) -> None:
    """Refuses two prefixes of one routing domain that overlap (across domains they may).

    ``lines[name]``: the line of each subnet's prefix.  One sort and one sweep per
    domain, not a comparison of every pair; of the two subnets of an overlap, the one
    later in the file is named."""
    order = {name: index for index, name in enumerate(subnets)}
    by_domain: dict[str, list[tuple[ipaddress.IPv4Network, str]]] = {}
    for subnet in subnets.values():
        if subnet.routing_domain is not None and subnet.prefix is not None:
            by_domain.setdefault(subnet.routing_domain, []).append((subnet.prefix, subnet.name))
    for domain, members in by_domain.items():
        members.sort(key=lambda member: (int(member[0].network_address), member[0].prefixlen))
        widest: tuple[ipaddress.IPv4Network, str] | None = None  # reaching furthest so far
        for network, name in members:
            if widest is not None and network.network_address <= widest[0].broadcast_address:
                (later_net, later), (earlier_net, earlier) = sorted(
                    ((network, name), widest), key=lambda member: order[member[1]],
                    reverse=True)
                raise check.fail(f"virtual_subnets.{later}.prefix",
                                 f"{later_net} overlaps {earlier_net} of subnet {earlier!r} in "
                                 f"routing domain {domain!r} (prefixes may overlap only "
                                 "across routing domains)", lines[later])
            if widest is None or network.broadcast_address > widest[0].broadcast_address:
                widest = (network, name)


def ca_in_prefix(check: Checker, where: str, line: int,
                 ca: ipaddress.IPv4Interface | ipaddress.IPv6Interface,
                 subnet: VirtualSubnet) -> None:
    """Refuses a CA outside its subnet's prefix, with another prefix length, or on the
    prefix's network, broadcast or (in a routing domain) gateway address (nothing to
    check without a prefix)."""
    network = subnet.prefix
    if network is None:
        return
    if ca.network != network:
        what = "lies outside" if ca.ip not in network else \
            f"has prefix length {ca.network.prefixlen}, not that of"
        raise check.fail(where, f"{ca} {what} the prefix {network} of subnet {subnet.name!r}",
                         line)
    if ca.ip == network.network_address:
        raise check.fail(where, f"{ca.ip} is the network address of {network}", line)
    if ca.ip == network.broadcast_address:
        raise check.fail(where, f"{ca.ip} is the broadcast address of {network}", line)
    if ca.ip == subnet.gateway:
        raise check.fail(where, f"{ca.ip} is the gateway of subnet {subnet.name!r} (the "
                         f"distributed router's address: the first host address of {network})",
                         line)
