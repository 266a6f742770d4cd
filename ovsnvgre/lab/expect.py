"""What each probe of `lab check` should see, derived from the fabric: pure, no I/O.

A packet from VM a towards the CA of VM b is (issue 18, as HNV's distributed router):

- **bridged** when both are in one VSID (and b's CA is on a's link),
- **routed** when their VSIDs differ but both subnets are in one routing domain: the
  router on a's host decrements the TTL, so a Linux VM's reply (TTL 64) arrives with 63,
- **isolated** otherwise: dropped on a's host.

Addresses are looked up in the source's routing domain: with overlapping prefixes one
address is a different VM in each domain, so an isolated probe may well be answered -
by the VM that holds the address in the *source's* domain (``Probe.responder``), never
by the target.  Each VM of a routed subnet also pings every gateway of its domain, which
the pipeline of its own host answers (``ROUTER``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import Enum

from ovsnvgre.lab.topology import LabVm, Topology

# Who answers a gateway address: the distributed router, i.e. the source host's pipeline.
ROUTER = "router"
# The TTL a Linux VM puts on its replies (net.ipv4.ip_default_ttl), seen as is when
# bridged and one less when the distributed router forwarded it.
LINUX_TTL = 64


class Outcome(str, Enum):
    """What the fabric says happens to a probe."""

    BRIDGED = "bridged"    # same VSID: switched, TTL untouched
    ROUTED = "routed"      # same routing domain, another VSID: TTL - 1, source MAC router_mac
    ISOLATED = "isolated"  # another routing domain, or none: dropped on the source host
    GATEWAY = "gateway"    # a gateway of the source's routing domain: the router answers

    def __str__(self) -> str:
        return str(self.value)


@dataclass(frozen=True)
class Probe:
    """One cell of the matrix: ``source`` (a VM) towards ``address``, the CA of VM
    ``target`` (or a gateway: ``target`` is then ``gateway of <subnet>``).

    ``responder``: who must answer ``address`` seen from ``source``: ``target`` when it is
    reached, another VM holding the same address in the source's view, the source itself,
    ``ROUTER``, or None (nobody).  ``ttl``: the TTL every reply must carry, None when
    unchecked (an isolated probe, a gateway, an IPv6 target).
    """

    source: str
    target: str
    address: str
    outcome: Outcome
    responder: str | None
    ttl: int | None
    same_vsid: bool

    @property
    def expected(self) -> bool:
        """Whether the probe must be answered by its target (bridged, routed, gateway)."""
        return self.outcome is not Outcome.ISOLATED


def outcome(source: LabVm, target: LabVm) -> Outcome:
    """Bridged, routed or isolated, for a packet from ``source`` to ``target``'s CA."""
    if source.ca.version != target.ca.version:
        return Outcome.ISOLATED
    if source.vsid == target.vsid:
        # Without a route a VM only reaches what is on its link (an L2-only subnet
        # declares no prefix, so two of its VMs may well be on different links).
        on_link = target.ca.ip in source.ca.network
        return Outcome.BRIDGED if on_link else Outcome.ISOLATED
    if source.routing_domain is not None and source.routing_domain == target.routing_domain:
        return Outcome.ROUTED
    return Outcome.ISOLATED


def responder(topology: Topology, source: LabVm, address: str) -> str | None:
    """Who answers ``address`` seen from ``source``: a VM's name, ``ROUTER``, or None.

    The lookup happens in the source's own world only: its own address, its VSID's
    link, then (for a routed subnet) the gateways and subnets of its routing domain.
    """
    ip = ipaddress.ip_address(address)
    if ip == source.ca.ip:
        return source.name
    for vm in topology.vms:
        if vm.vsid == source.vsid and vm.ca.ip == ip and ip in source.ca.network:
            return vm.name
    domain = source.routing_domain
    if domain is None:
        return None
    if ip in topology.gateways.get(domain, ()):
        return ROUTER
    for vm in topology.vms:
        if vm.routing_domain == domain and vm.vsid != source.vsid and vm.ca.ip == ip:
            return vm.name
    return None


def matrix(topology: Topology) -> list[Probe]:
    """Every VM towards every other VM's CA, then towards every gateway of its domain.

    Pairs of different address families are left out (a VM cannot even send there).
    """
    probes = []
    for source in topology.vms:
        for target in topology.vms:
            if source.name == target.name or source.ca.version != target.ca.version:
                continue
            kind = outcome(source, target)
            address = str(target.ca.ip)
            ttl = {Outcome.BRIDGED: LINUX_TTL, Outcome.ROUTED: LINUX_TTL - 1}.get(kind)
            probes.append(Probe(source.name, target.name, address, kind,
                                responder(topology, source, address),
                                ttl if source.ca.version == 4 else None,
                                same_vsid=source.vsid == target.vsid))
        if source.routing_domain is not None:
            for gateway, subnet in _gateways(topology, source.routing_domain):
                probes.append(Probe(source.name, f"gateway of {subnet}", str(gateway),
                                    Outcome.GATEWAY, ROUTER, None, same_vsid=False))
    return probes


def _gateways(topology: Topology, domain: str) -> list[tuple[ipaddress.IPv4Address, str]]:
    """Each gateway of ``domain`` with the name of a subnet it serves, in fabric order."""
    subnet_of = {vm.gateway: vm.subnet for vm in topology.vms if vm.routing_domain == domain}
    return [(gateway, subnet_of.get(gateway, str(gateway)))
            for gateway in topology.gateways.get(domain, ())]


@dataclass(frozen=True)
class Seen:
    """What one probe observed.

    ``replied``: ping got at least one reply; ``ttls``: the TTL of each reply (ping's
    ``ttl=`` field); ``answered_by``: who answered when known (a VM's name from its
    whoami TCP service or from the neighbour entry's MAC, ``ROUTER`` for the router's
    MAC), also when ping got no reply; None when it cannot be told (a routed reply from
    a VM with no whoami service);
    ``tcp``: the 64 KiB TCP echo with the target, None when not tried.
    """

    replied: bool
    ttls: tuple[int, ...] = ()
    answered_by: str | None = None
    tcp: bool | None = None


def reached(probe: Probe, seen: Seen) -> bool:
    """Whether the probe reached its target: a reply from it, or a reply nobody else can
    have given (unidentified, and the target is who must answer)."""
    if not seen.replied:
        return False
    who = probe.responder if seen.answered_by is None else seen.answered_by
    target = ROUTER if probe.outcome is Outcome.GATEWAY else probe.target
    return who == target


def problems(probe: Probe, seen: Seen) -> list[str]:
    """Every way ``seen`` differs from what the fabric says ``probe`` must see; empty: ok.

    Bridged, routed, gateway: answered, by the target, every reply with the probe's TTL,
    TCP not failed.  Isolated: never answered by the target (to ping, ARP or TCP), and
    not answered at all when nobody holds the address in the source's world.
    """
    found = []
    if probe.expected:
        want = ROUTER if probe.outcome is Outcome.GATEWAY else probe.target
        if not seen.replied:
            found.append("no reply")
        elif seen.answered_by is not None and seen.answered_by != want:
            found.append(f"answered by {seen.answered_by}, not {want}")
        wrong = sorted({ttl for ttl in seen.ttls if ttl != probe.ttl})
        if probe.ttl is not None and wrong:
            found.append(f"reply TTL {', '.join(map(str, wrong))}, expected {probe.ttl}")
        if seen.tcp is False:
            found.append("TCP failed")
    elif seen.answered_by == probe.target:  # to ping, or only to ARP or TCP: a leak too
        found.append(f"{probe.target} answered, but the fabric isolates it from "
                     f"{probe.source}")
    elif seen.replied:
        if probe.responder is None:
            found.append(f"answered by {seen.answered_by or 'an unknown host'}, expected "
                         "no answer")
        elif seen.answered_by is not None and seen.answered_by != probe.responder:
            found.append(f"answered by {seen.answered_by}, expected {probe.responder}")
    return found
