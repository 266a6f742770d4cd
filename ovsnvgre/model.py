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


@dataclass(frozen=True)
class Host:
    """One hypervisor: its Provider Address (PA), uplink NIC and PA-subnet gateway."""

    name: str
    pa: ipaddress.IPv4Interface
    uplink: str | None = None
    gateway: ipaddress.IPv4Address | None = None


@dataclass(frozen=True)
class VirtualSubnet:
    """A tenant's virtual subnet and its VSID (RFC 7637 section 3.2: 4096-16777214)."""

    name: str
    vsid: int


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
    source: str = field(default="<fabric>", compare=False)

    def vms_on(self, host: str) -> list[Vm]:
        """The VMs of ``host``, in file order."""
        return [vm for vm in self.vms.values() if vm.host == host]

    def vsids_on(self, host: str) -> set[int]:
        """The VSIDs that have at least one VM on ``host``."""
        return {self.virtual_subnets[vm.virtual_subnet].vsid for vm in self.vms_on(host)}

    def vsid_of(self, vm: Vm) -> int:
        """The VSID of ``vm``'s virtual subnet."""
        return self.virtual_subnets[vm.virtual_subnet].vsid
