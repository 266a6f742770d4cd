"""A fabric as a lab topology: plain data, no I/O (the builder makes it real).

One router namespace joins the hosts' PA subnets (one Linux bridge per subnet,
holding the gateway address); each fabric host is a namespace with its uplink
veth into that bridge and its own switch; each VM is a namespace behind a veth
whose host end is the fabric's port.
"""

from __future__ import annotations

import ipaddress
import re
import zlib
from dataclasses import dataclass, field

from ovsnvgre import nvgre
from ovsnvgre.errors import FabricError
from ovsnvgre.model import Fabric

UNDERLAY_MTU = 1500
VM_IFNAME = "eth0"


@dataclass(frozen=True)
class PaSubnet:
    """One physical (PA) subnet: a Linux bridge in the router holding its gateways."""

    network: ipaddress.IPv4Network
    bridge: str  # in the router namespace
    gateways: tuple[ipaddress.IPv4Interface, ...]


@dataclass(frozen=True)
class LabHost:
    """A fabric host as a namespace with its uplink veth into its PA subnet's bridge."""

    name: str
    netns: str
    uplink: str
    router_port: str  # the uplink's peer, in the router namespace
    pa_subnet: ipaddress.IPv4Network
    pa: ipaddress.IPv4Interface
    gateway: ipaddress.IPv4Address | None


@dataclass(frozen=True)
class LabVm:
    """A VM as a namespace behind a veth whose host end is the fabric's port."""

    name: str
    host: str
    netns: str
    port: str  # on the host
    mac: str
    ca: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    vsid: int
    mtu: int
    subnet: str = ""
    # The routing domain of the VM's subnet, and the subnet's gateway (the VM's default
    # route) when it has one; None for an L2-only subnet.
    routing_domain: str | None = None
    gateway: ipaddress.IPv4Address | None = None


@dataclass(frozen=True)
class Topology:
    """The whole lab as data: router, PA subnets, hosts and VMs, with their names."""

    prefix: str
    router: str
    pa_subnets: tuple[PaSubnet, ...]
    hosts: tuple[LabHost, ...]
    vms: tuple[LabVm, ...]
    # The distributed router's MAC, and every gateway address of each routing domain
    # (the router answers ICMP echo on each of them), from the fabric.
    router_mac: str = "02:00:5e:00:01:01"
    gateways: dict[str, tuple[ipaddress.IPv4Address, ...]] = field(default_factory=dict)

    @property
    def namespaces(self) -> list[str]:
        """Every namespace of the lab: the router's, the hosts', the VMs'."""
        return [self.router, *(h.netns for h in self.hosts), *(v.netns for v in self.vms)]


def lab_prefix(fabric: Fabric) -> str:
    """``nv-`` + the fabric's name; shortened or made safe, it gets a checksum too.

    Two labs of two fabrics get two prefixes, so they can run side by side.
    """
    safe = re.sub(r"[^a-z0-9]", "", fabric.name.lower())
    if safe == fabric.name and len(safe) <= 12:
        return f"nv-{safe}"
    return f"nv-{safe[:8] or 'fabric'}-{zlib.crc32(fabric.name.encode()) % 4096:03x}"


def build(fabric: Fabric) -> Topology:
    """The lab of ``fabric``; raises FabricError for a host without an uplink."""
    prefix = lab_prefix(fabric)
    networks = sorted({h.pa.network for h in fabric.hosts.values()},
                      key=lambda n: (int(n.network_address), n.prefixlen))
    subnets = []
    for index, network in enumerate(networks):
        gateways = sorted({ipaddress.IPv4Interface(f"{h.gateway}/{network.prefixlen}")
                           for h in fabric.hosts.values()
                           if h.pa.network == network and h.gateway is not None}, key=str)
        subnets.append(PaSubnet(network=network, bridge=f"sub{index}",
                                 gateways=tuple(gateways)))
    hosts = []
    for index, host in enumerate(fabric.hosts.values()):
        if host.uplink is None:
            raise FabricError(f"{fabric.source}: hosts.{host.name}.uplink: the lab connects each "
                              "host through its uplink; give every host an `uplink`")
        hosts.append(LabHost(name=host.name, netns=f"{prefix}-h-{host.name}",
                             uplink=host.uplink, router_port=f"up{index}",
                             pa_subnet=host.pa.network, pa=host.pa, gateway=host.gateway))
    vms = []
    for vm in fabric.vms.values():
        subnet = fabric.virtual_subnets[vm.virtual_subnet]
        routed = subnet.routing_domain is not None
        vms.append(LabVm(name=vm.name, host=vm.host, netns=f"{prefix}-v-{vm.name}",
                         port=vm.port, mac=vm.mac, ca=vm.ca, vsid=subnet.vsid,
                         mtu=nvgre.max_vm_mtu(UNDERLAY_MTU), subnet=subnet.name,
                         routing_domain=subnet.routing_domain,
                         gateway=subnet.gateway if routed else None))
    gateways = {domain: tuple(s.gateway for s in fabric.subnets_in(domain)
                              if s.gateway is not None)
                for domain in fabric.routing_domains}
    return Topology(prefix=prefix, router=f"{prefix}-router", pa_subnets=tuple(subnets),
                    hosts=tuple(hosts), vms=tuple(vms), router_mac=fabric.overlay.router_mac,
                    gateways=gateways)
