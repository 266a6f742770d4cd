"""The fabric as frozen data: what `fabric.load` returns and everything else reads.

No I/O and no validation here (fabric.py validates); the settings that take one of
a few values are enums, so that a typo in the code is an AttributeError, not a
silently different branch.  Each enum is a ``str`` whose value is the fabric file's
spelling, so it prints, compares and serialises (JSON, OVSDB) as that word.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import Any


class Choice(str, Enum):
    """An enum whose members are the fabric file's words."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @classmethod
    def words(cls) -> tuple[str, ...]:
        """Every accepted spelling, in declaration order (for error messages)."""
        return tuple(member.value for member in cls)


class KeyLayout(Choice):
    """How the 32-bit GRE key carries the VSID (RFC 7637 section 3.2)."""

    RFC7637 = "rfc7637"  # VSID in the top 24 bits, FlowID in the low 8
    PLAIN = "plain"      # key = VSID: only for fabrics that never meet a real NVGRE endpoint


class TunnelPorts(Choice):
    """Which GRE ports a host gets towards its peers."""

    PER_VSID = "per-vsid"  # one port per (peer, VSID) with a fixed key
    PER_PEER = "per-peer"  # one port per peer, key=flow: the pipeline sets the key
    # One port for every peer, remote_ip=flow and key=flow: the pipeline sets the peer's
    # PA (tun_dst) and the key, as OVN and Antrea do to avoid N-1 ports per host.
    FLOW = "flow"


class FlowId(Choice):
    """What a sender puts in the key's low 8 bits, the FlowID (RFC 7637 section 3.2)."""

    ZERO = "zero"  # no entropy: RFC 7637 section 3.2 then requires FlowID 0
    HASH = "hash"  # a hash of the inner flow: one FlowID per flow, flows spread over 256


class DatapathType(Choice):
    """The Bridge table's datapath_type column (ovs-vswitchd.conf.db(5))."""

    SYSTEM = "system"  # the kernel module
    NETDEV = "netdev"  # the userspace datapath


@dataclass(frozen=True)
class Underlay:
    """The fabric's ``underlay`` section: the bridge that holds the uplink and the tep port."""

    bridge: str = "br0"
    tep_port: str = "tep0"
    # Addresses every host must still reach after `up` moves its underlay, when
    # it reached them before (ARP when on-link, ICMP echo when routed).
    probe: tuple[ipaddress.IPv4Address, ...] = ()
    # The MTU (bytes) the fabric plans for on every host's uplink; `status` reads the real one.
    mtu: int = 1500


@dataclass(frozen=True)
class Overlay:
    """The fabric's ``overlay`` section: the integration bridge and its tunnels."""

    bridge: str = "br-int"
    key_layout: KeyLayout = KeyLayout.RFC7637
    tunnel_ports: TunnelPorts = TunnelPorts.PER_VSID
    # BFD on every tunnel port, so that `status` shows each peer's liveness.
    bfd: bool = False
    # mtu_request (bytes) on every VM port ovsnvgre creates; None leaves the MTU alone.
    vm_mtu: int | None = None
    # The FlowID sent; only tunnel ports that take the key from the flow can carry a hash.
    flow_id: FlowId = FlowId.ZERO
    # The distributed router's MAC, one for the whole fabric (every host answers ARP for
    # every gateway with it, as HNV's distributed router does); locally administered
    # unicast.  The default is in 02:00:5e, the locally administered twin of IANA's block.
    router_mac: str = "02:00:5e:00:01:01"


@dataclass(frozen=True)
class Host:
    """One hypervisor: its Provider Address (PA), uplink NIC and PA-subnet gateway."""

    name: str
    pa: ipaddress.IPv4Interface
    uplink: str | None = None
    gateway: ipaddress.IPv4Address | None = None


@dataclass(frozen=True)
class External:
    """A routing domain's way out: its gateway host's NIC on the external network.

    ``host``: the fabric host that NATs for the domain; ``nic``: that host's NIC on the
    external network; ``address``: the domain's SNAT address with the external network's
    prefix length; ``gateway``: the next hop for every destination outside the fabric
    (resolved by ARP); ``floating_ips``: VM name -> its 1:1 NAT address, both ways.
    """

    host: str
    nic: str
    address: ipaddress.IPv4Interface
    gateway: ipaddress.IPv4Address
    floating_ips: dict[str, ipaddress.IPv4Address] = field(default_factory=dict)


@dataclass(frozen=True)
class RoutingDomain:
    """A tenant's routing domain (HNV's RDID): the virtual subnets a distributed router joins.

    Between the subnets of one domain, traffic is routed on the source host; between
    domains, never.  The subnets name their domain (``VirtualSubnet.routing_domain``).
    ``external``: its gateway to the outside (SNAT, floating IPs), or None.
    """

    name: str
    external: External | None = None


@dataclass(frozen=True)
class VirtualSubnet:
    """A tenant's virtual subnet and its VSID (RFC 7637 section 3.2: 4096-16777214).

    ``prefix``: the subnet's IPv4 prefix (every VM's CA lies in it), None for an L2-only
    subnet that declares none; ``routing_domain``: the name of the routing domain whose
    distributed router has an interface in this subnet (it needs a prefix), or None.
    """

    name: str
    vsid: int
    prefix: ipaddress.IPv4Network | None = None
    routing_domain: str | None = None

    @property
    def gateway(self) -> ipaddress.IPv4Address | None:
        """The distributed router's address in this subnet: the prefix's first host address
        (10.1.1.1 for 10.1.1.0/24, as in HNV); None without a prefix or a routing domain
        (an L2-only subnet has no router here: its first address may be a VM's, such as
        the tenant's own router)."""
        if self.prefix is None or self.routing_domain is None:
            return None
        return self.prefix.network_address + 1


@dataclass(frozen=True)
class Vm:
    """One VM: the host it runs on, its virtual subnet, port, MAC and Customer Address."""

    name: str
    host: str
    virtual_subnet: str
    port: str
    mac: str
    ca: ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass(frozen=True)
class Fabric:
    """A whole validated fabric file."""

    name: str
    datapath_type: DatapathType
    underlay: Underlay
    overlay: Overlay
    hosts: dict[str, Host]
    virtual_subnets: dict[str, VirtualSubnet]
    vms: dict[str, Vm]
    routing_domains: dict[str, RoutingDomain] = field(default_factory=dict)
    source: str = field(default="<fabric>", compare=False)

    @cached_property
    def index(self) -> FabricIndex:
        """The fabric's VMs by host and by VSID, built on first use (one pass over the VMs)
        and kept for the life of this object: every per-host or per-VSID question is a
        lookup, never a scan of the whole fabric (a 1,000-host fabric asks one per peer)."""
        return FabricIndex.build(self)

    def __getstate__(self) -> dict[str, Any]:
        # The index is derived: a copy or pickle of a Fabric carries the fields only.
        return {key: value for key, value in self.__dict__.items() if key != "index"}

    def vms_on(self, host: str) -> tuple[Vm, ...]:
        """The VMs of ``host``, in file order."""
        return self.index.vms_by_host.get(host, ())

    def vsids_on(self, host: str) -> frozenset[int]:
        """The VSIDs that have at least one VM on ``host``."""
        return self.index.vsids_by_host.get(host, frozenset())

    def vms_in(self, vsid: int) -> tuple[Vm, ...]:
        """Every VM of the fabric in ``vsid``, in file order."""
        return self.index.vms_by_vsid.get(vsid, ())

    def hosts_with(self, vsid: int) -> tuple[str, ...]:
        """The hosts that have at least one VM in ``vsid``, in file order of their first VM."""
        return self.index.hosts_by_vsid.get(vsid, ())

    def vsid_of(self, vm: Vm) -> int:
        """The VSID of ``vm``'s virtual subnet."""
        return self.virtual_subnets[vm.virtual_subnet].vsid

    def subnets_in(self, routing_domain: str) -> tuple[VirtualSubnet, ...]:
        """The virtual subnets of ``routing_domain``, in file order (none for an unknown name)."""
        return self.index.subnets_by_domain.get(routing_domain, ())

    def routing_domain_of(self, vm: Vm) -> str | None:
        """The routing domain of ``vm``'s virtual subnet, or None (an L2-only subnet)."""
        return self.virtual_subnets[vm.virtual_subnet].routing_domain

    def gateway_domains(self, host: str) -> tuple[RoutingDomain, ...]:
        """The routing domains whose external gateway is ``host``, in file order."""
        return tuple(domain for domain in self.routing_domains.values()
                     if domain.external is not None and domain.external.host == host)

    def domains_on(self, host: str) -> frozenset[str]:
        """The routing domains that have at least one VM on ``host``."""
        return self.index.domains_by_host.get(host, frozenset())

    def hosts_in_domain(self, routing_domain: str) -> tuple[str, ...]:
        """The hosts that have at least one VM in ``routing_domain``, in file order."""
        return self.index.hosts_by_domain.get(routing_domain, ())

    def vms_in_domain(self, routing_domain: str) -> tuple[Vm, ...]:
        """Every VM of the subnets of ``routing_domain``, subnet by subnet in file order."""
        return tuple(vm for subnet in self.subnets_in(routing_domain)
                     for vm in self.vms_in(subnet.vsid))

    def routed_vsids(self, host: str) -> frozenset[int]:
        """The VSIDs the VMs of ``host`` reach through their routing domains' routers: every
        subnet of every routing domain with a VM on ``host``, and of every routing domain
        whose external gateway ``host`` is (it routes the replies from outside)."""
        domains = set(self.domains_on(host))
        domains.update(domain.name for domain in self.gateway_domains(host))
        return frozenset(subnet.vsid for domain in domains
                         for subnet in self.subnets_in(domain))


@dataclass(frozen=True)
class FabricIndex:
    """A fabric's VMs grouped by host and by VSID (see ``Fabric.index``)."""

    vms_by_host: dict[str, tuple[Vm, ...]]
    vsids_by_host: dict[str, frozenset[int]]
    vms_by_vsid: dict[int, tuple[Vm, ...]]
    hosts_by_vsid: dict[int, tuple[str, ...]]
    subnets_by_domain: dict[str, tuple[VirtualSubnet, ...]] = field(default_factory=dict)
    domains_by_host: dict[str, frozenset[str]] = field(default_factory=dict)
    hosts_by_domain: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def build(cls, fabric: Fabric) -> FabricIndex:
        """The index of ``fabric``, in one pass over its VMs (file order kept)."""
        by_host: dict[str, list[Vm]] = {}
        by_vsid: dict[int, list[Vm]] = {}
        hosts_by_vsid: dict[int, dict[str, None]] = {}
        vsid_of = {name: subnet.vsid for name, subnet in fabric.virtual_subnets.items()}
        domain_of = {name: subnet.routing_domain
                     for name, subnet in fabric.virtual_subnets.items()}
        hosts_by_domain: dict[str, dict[str, None]] = {}
        for vm in fabric.vms.values():
            vsid = vsid_of[vm.virtual_subnet]
            by_host.setdefault(vm.host, []).append(vm)
            by_vsid.setdefault(vsid, []).append(vm)
            hosts_by_vsid.setdefault(vsid, {})[vm.host] = None
            domain = domain_of[vm.virtual_subnet]
            if domain is not None:
                hosts_by_domain.setdefault(domain, {})[vm.host] = None
        by_domain: dict[str, list[VirtualSubnet]] = {}
        for subnet in fabric.virtual_subnets.values():
            if subnet.routing_domain is not None:
                by_domain.setdefault(subnet.routing_domain, []).append(subnet)
        domains_by_host: dict[str, set[str]] = {}
        for domain, hosts in hosts_by_domain.items():
            for host in hosts:
                domains_by_host.setdefault(host, set()).add(domain)
        return cls(
            subnets_by_domain={domain: tuple(subnets) for domain, subnets in by_domain.items()},
            domains_by_host={host: frozenset(domains) for host, domains in domains_by_host.items()},
            hosts_by_domain={domain: tuple(hosts) for domain, hosts in hosts_by_domain.items()},
            vms_by_host={host: tuple(vms) for host, vms in by_host.items()},
            vsids_by_host={host: frozenset(vsid_of[vm.virtual_subnet] for vm in vms)
                           for host, vms in by_host.items()},
            vms_by_vsid={vsid: tuple(vms) for vsid, vms in by_vsid.items()},
            hosts_by_vsid={vsid: tuple(hosts) for vsid, hosts in hosts_by_vsid.items()})
