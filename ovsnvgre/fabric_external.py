"""Validation of a routing domain's ``external`` gateway (issue 19): the part of the fabric
loader that checks ``routing_domains.<name>.external``.  Pure; every refusal one
FabricError line naming file, line and entry (fabric_checks.Checker).

The rules: ``host`` is a fabric host and ``nic`` a NIC of it that is not its uplink (the
uplink is in the underlay bridge, and a macvlan cannot sit on an enslaved NIC);
``address`` is the domain's SNAT address with the external network's prefix length,
neither that network's network nor broadcast address; ``gateway`` lies in that network
and is no address of the domain; each ``floating_ips`` entry names a VM of that domain
with an IPv4 CA and gives it an address in the same network.  Every external address
(SNAT and floating) is unique in the fabric, and none is a host's PA or underlay gateway
or another domain's external gateway.  The external network overlaps no host's PA
network (the provider network stays private) nor a prefix of the domain's own subnets
(the namespace routes those to the overlay); ``gateway`` is no other domain's external
address; ``nic`` is no VM's port on the gateway host.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from ovsnvgre import nvgre
from ovsnvgre.fabric_checks import Checker, join
from ovsnvgre.fabric_yaml import LineMap
from ovsnvgre.model import External, Host, RoutingDomain, VirtualSubnet, Vm

EXTERNAL_KEYS = {"host", "nic", "address", "gateway", "floating_ips"}
REQUIRED_KEYS = {"host", "nic", "address", "gateway"}


@dataclass
class Seen:
    """What the external sections parsed so far hold, for the checks across domains:
    ``owner[address]`` the entry path that has each external address, and
    ``floating_lines[(domain, vm)]`` the line of each floating IP (checked against the
    VMs once they are known)."""

    owner: dict[ipaddress.IPv4Address, str] = field(default_factory=dict)
    floating_lines: dict[tuple[str, str], int] = field(default_factory=dict)
    # The entry path of the first domain with each external gateway, and each domain's
    # ``address`` and ``nic`` lines (checked against subnets and VMs once they are known).
    gateways: dict[ipaddress.IPv4Address, str] = field(default_factory=dict)
    lines: dict[tuple[str, str], int] = field(default_factory=dict)
    # The external networks on each (host, NIC), with the entry path of each.
    networks: dict[tuple[str, str], dict[ipaddress.IPv4Network, str]] = field(
        default_factory=dict)


def _parse_interface(text: str) -> ipaddress.IPv4Interface:
    if "/" not in text:
        raise ValueError(text)
    return ipaddress.IPv4Interface(text)


def external(entry: LineMap, path: str, check: Checker, hosts: dict[str, Host],
             reserved: dict[str, str], nic_name: re.Pattern[str], seen: Seen
             ) -> External | None:
    """A domain entry's ``external`` (``path`` is the domain's), or None when absent.

    ``reserved``: the bridge and tep port names (a NIC may not be one of them);
    ``nic_name``: the pattern of an interface name (the loader's)."""
    if "external" not in entry:
        return None
    domain = path.split(".", 1)[1]  # path is routing_domains.<name>; a name may hold dots
    where = join(path, "external")
    section = check.mapping(entry["external"], where, entry.key_lines["external"],
                            entry.texts.get("external"))
    check.keys(section, where, EXTERNAL_KEYS, REQUIRED_KEYS)
    host = check.string(section, "host", where)
    if host not in hosts:
        raise check.fail(join(where, "host"), f"unknown host {host!r} (hosts: "
                         f"{', '.join(hosts)})", section.key_lines["host"])
    nic = check.string(section, "nic", where, None, nic_name, nvgre.MAX_PORT_NAME)
    assert nic is not None  # noqa: S101 - required above
    nic_line = section.key_lines["nic"]
    if nic in reserved:
        raise check.fail(join(where, "nic"), f"{nic!r} is already {reserved[nic]}", nic_line)
    if nic == hosts[host].uplink:
        raise check.fail(join(where, "nic"), f"{nic!r} is the uplink of host {host!r} (it "
                         "sits in the underlay bridge; the external network needs its own NIC)",
                         nic_line)
    address = check.parsed(section, "address", where, _parse_interface,
                           "an IPv4 address with a prefix length (like 203.0.113.10/24)")
    network = address.network
    on_nic = seen.networks.setdefault((host, nic), {})
    for other, other_path in on_nic.items():
        # Several networks may share a wire; one network is one prefix on it.
        if other != network and other.overlaps(network):
            raise check.fail(join(where, "address"), f"{address} is on NIC {nic!r} of host "
                             f"{host!r} with {other_path}'s network {other}: the same "
                             "network with another prefix length", section.key_lines["address"])
    on_nic.setdefault(network, join(where, "address"))
    for other in hosts.values():
        if network.overlaps(other.pa.network):
            raise check.fail(join(where, "address"), f"the external network {network} "
                             f"overlaps the PA network {other.pa.network} of host {other.name!r} "
                             "(the provider network stays private)", section.key_lines["address"])
    _usable(check, join(where, "address"), section.key_lines["address"], address.ip, network,
            hosts, seen)
    gateway = check.parsed(section, "gateway", where, ipaddress.IPv4Address, "an IPv4 address")
    _gateway(check, join(where, "gateway"), section.key_lines["gateway"], gateway, address,
             seen)
    seen.owner[address.ip] = join(where, "address")
    seen.gateways.setdefault(gateway, join(where, "gateway"))
    seen.lines[domain, "address"] = section.key_lines["address"]
    seen.lines[domain, "nic"] = nic_line
    floating = _floating_ips(section, where, domain, check, network, gateway, hosts, seen)
    return External(host=host, nic=nic, address=address, gateway=gateway,
                    floating_ips=floating)


def _gateway(check: Checker, where: str, line: int, gateway: ipaddress.IPv4Address,
             address: ipaddress.IPv4Interface, seen: Seen) -> None:
    """Refuses an external gateway outside the external network of ``address`` (which
    overlaps no PA network: so no host's PA either), or that is the domain's own or
    another domain's external address."""
    if gateway not in address.network:
        raise check.fail(where, f"{gateway} is outside the external network "
                         f"{address.network} of {address}", line)
    if gateway == address.ip:
        raise check.fail(where, f"{gateway} is the domain's own SNAT address", line)
    if gateway in seen.owner:
        raise check.fail(where, f"{gateway} is already {seen.owner[gateway]}", line)


def _usable(check: Checker, where: str, line: int, ip: ipaddress.IPv4Address,
            network: ipaddress.IPv4Network, hosts: dict[str, Host], seen: Seen) -> None:
    """Refuses an external address that is its network's network or broadcast address,
    already another external address, or a host's PA or underlay gateway."""
    if network.prefixlen < 31 and ip in (network.network_address, network.broadcast_address):
        raise check.fail(where, f"{ip} is the network or broadcast address of {network}", line)
    if ip in seen.owner:
        raise check.fail(where, f"{ip} is already {seen.owner[ip]}", line)
    if ip in seen.gateways:
        raise check.fail(where, f"{ip} is already {seen.gateways[ip]}", line)
    for host in hosts.values():
        if ip == host.pa.ip:
            raise check.fail(where, f"{ip} is the PA of host {host.name!r}", line)
        if ip == host.gateway:
            raise check.fail(where, f"{ip} is the underlay gateway of host {host.name!r}", line)


def _floating_ips(section: LineMap, where: str, domain: str, check: Checker,
                  network: ipaddress.IPv4Network, gateway: ipaddress.IPv4Address,
                  hosts: dict[str, Host], seen: Seen) -> dict[str, ipaddress.IPv4Address]:
    if "floating_ips" not in section:
        return {}
    path = join(where, "floating_ips")
    mapping = check.mapping(section["floating_ips"], path, section.key_lines["floating_ips"],
                            section.texts.get("floating_ips"))
    floating: dict[str, ipaddress.IPv4Address] = {}
    for vm, value in mapping.items():
        entry_path, line = f"{path}.{vm}", mapping.key_lines[vm]
        text = mapping.texts.get(vm) or value
        ip = check.parse(text, entry_path, line, ipaddress.IPv4Address, "an IPv4 address")
        if ip not in network:
            raise check.fail(entry_path, f"{ip} is outside the external network {network}", line)
        if ip == gateway:
            raise check.fail(entry_path, f"{ip} is the external gateway", line)
        _usable(check, entry_path, line, ip, network, hosts, seen)
        seen.owner[ip] = entry_path
        seen.floating_lines[domain, vm] = line
        floating[vm] = ip
    return floating


def floating_vms(domains: dict[str, RoutingDomain], subnets: dict[str, VirtualSubnet],
                 vms: dict[str, Vm], seen: Seen, check: Checker) -> None:
    """Refuses (run once the subnets and VMs are known) an external network that
    overlaps a prefix of its domain's subnets, an external NIC that is a VM's port on
    the gateway host, and a floating IP whose VM is not a VM of that routing domain
    with an IPv4 CA."""
    for domain in domains.values():
        if domain.external is None:
            continue
        _apart(domain, subnets, vms, seen, check)
        for name in domain.external.floating_ips:
            where = f"routing_domains.{domain.name}.external.floating_ips.{name}"
            line = seen.floating_lines[domain.name, name]
            vm = vms.get(name)
            if vm is None:
                raise check.fail(where, f"unknown VM {name!r}", line)
            if subnets[vm.virtual_subnet].routing_domain != domain.name:
                raise check.fail(where, f"VM {name!r} is not in routing domain "
                                 f"{domain.name!r} (its subnet is {vm.virtual_subnet!r})", line)
            if not isinstance(vm.ca, ipaddress.IPv4Interface):
                raise check.fail(where, f"VM {name!r} has no IPv4 CA to translate to", line)


def _apart(domain: RoutingDomain, subnets: dict[str, VirtualSubnet], vms: dict[str, Vm],
           seen: Seen, check: Checker) -> None:
    """Refuses ``domain``'s external network when it overlaps a prefix of the domain's
    subnets, and its NIC when it is a VM's port on the gateway host."""
    external = domain.external
    assert external is not None  # noqa: S101 - floating_vms passes gateway domains only
    where = f"routing_domains.{domain.name}.external"
    network = external.address.network
    for subnet in subnets.values():
        if subnet.routing_domain == domain.name and subnet.prefix is not None \
                and subnet.prefix.overlaps(network):
            raise check.fail(f"{where}.address", f"the external network {network} overlaps "
                             f"the prefix {subnet.prefix} of the domain's subnet "
                             f"{subnet.name!r}", seen.lines[domain.name, "address"])
    for vm in vms.values():
        if vm.host == external.host and vm.port == external.nic:
            raise check.fail(f"{where}.nic", f"{vm.port!r} is already the port of VM "
                             f"{vm.name!r} on host {vm.host!r}", seen.lines[domain.name, "nic"])
