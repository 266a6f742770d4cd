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


@dataclass(frozen=True)
class FabricIndex:
    """A fabric's VMs grouped by host and by VSID (see ``Fabric.index``)."""

    vms_by_host: dict[str, tuple[Vm, ...]]
    vsids_by_host: dict[str, frozenset[int]]
    vms_by_vsid: dict[int, tuple[Vm, ...]]
    hosts_by_vsid: dict[int, tuple[str, ...]]

    @classmethod
    def build(cls, fabric: Fabric) -> FabricIndex:
        """The index of ``fabric``, in one pass over its VMs (file order kept)."""
        by_host: dict[str, list[Vm]] = {}
        by_vsid: dict[int, list[Vm]] = {}
        hosts_by_vsid: dict[int, dict[str, None]] = {}
        vsid_of = {name: subnet.vsid for name, subnet in fabric.virtual_subnets.items()}
        for vm in fabric.vms.values():
            vsid = vsid_of[vm.virtual_subnet]
            by_host.setdefault(vm.host, []).append(vm)
            by_vsid.setdefault(vsid, []).append(vm)
            hosts_by_vsid.setdefault(vsid, {})[vm.host] = None
        return cls(
            vms_by_host={host: tuple(vms) for host, vms in by_host.items()},
            vsids_by_host={host: frozenset(vsid_of[vm.virtual_subnet] for vm in vms)
                           for host, vms in by_host.items()},
            vms_by_vsid={vsid: tuple(vms) for vsid, vms in by_vsid.items()},
            hosts_by_vsid={vsid: tuple(hosts) for vsid, hosts in hosts_by_vsid.items()})
