"""What the switch and the kernel hold now, as plain data.

Filled in by the I/O edges (ovsdb/ reads an ActualSwitch, netlink.py an
ActualKernel) and read by the pure diff in plan.py; this module does no I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ovsnvgre.desired import RouteSpec

Address = ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass(frozen=True)
class ActualBridge:
    """A Bridge row: the columns ovsnvgre compares, and its ports by name."""

    name: str
    datapath_type: str
    protocols: tuple[str, ...]
    fail_mode: str | None
    external_ids: dict[str, str]
    ports: tuple[str, ...]


@dataclass(frozen=True)
class ActualPort:
    """A Port row with its (first) Interface row; ``interfaces`` counts them (a bond has 2+)."""

    name: str
    bridge: str | None
    iface_type: str
    options: dict[str, str]
    external_ids: dict[str, str]
    iface_external_ids: dict[str, str]
    interfaces: int = 1
    bfd: dict[str, str] = field(default_factory=dict)
    mtu_request: int | None = None
    mac: str | None = None  # the Interface's mac column (only internal ports use it)


class PortStatus(dict[str, tuple[int | None, str | None]]):
    """Interface name -> (OpenFlow port number or None, ovs-vswitchd's error or None).

    From the Interface table's ``ofport`` and ``error`` columns (ovs-vswitchd.conf.db(5)).
    """

    def only(self, names: set[str]) -> PortStatus:
        """The entries of ``names`` alone."""
        return PortStatus({name: value for name, value in self.items() if name in names})

    def live(self) -> set[str]:
        """The interfaces that have an OpenFlow port number."""
        return {name for name, (ofport, _) in self.items() if ofport is not None and ofport > 0}

    def refused(self) -> dict[str, str]:
        """The interfaces ovs-vswitchd could not open, with its reason."""
        return {name: error or "no OpenFlow port number"
                for name, (ofport, error) in self.items() if error or ofport == -1}


@dataclass(frozen=True)
class ActualSwitch:
    """Every bridge and port of one Open_vSwitch database, by name."""

    bridges: dict[str, ActualBridge]
    ports: dict[str, ActualPort]
    interfaces: PortStatus = field(default_factory=PortStatus)
    # Every interface's port, by interface name: a bond port holds several.
    port_of_interface: dict[str, str] = field(default_factory=dict)

    def bridge_external_ids(self) -> dict[str, dict[str, str]]:
        """Each bridge's external_ids, by name."""
        return {name: bridge.external_ids for name, bridge in self.bridges.items()}


@dataclass(frozen=True)
class LinkState:
    """One kernel link: up or down, its global addresses, its movable routes, MTU (bytes).

    The rest describes the link for preflight and for the tep port, and is not part
    of what a snapshot restores: its MAC, its master (name and kind: bridge, bond,
    team, vrf, openvswitch), the links stacked on it (VLAN, macvlan, ipvlan: name ->
    kind), the addresses that expire (DHCP, SLAAC: a finite valid lifetime), the
    routes a DHCP client or router advertisements made, and its IPv6 sysctls
    (net.ipv6.conf.LINK.*: name -> value).
    """

    name: str
    up: bool
    addresses: frozenset[Address]
    routes: frozenset[RouteSpec]
    mtu: int = field(default=0, compare=False)
    mac: str = field(default="", compare=False)
    master: str | None = field(default=None, compare=False)
    master_kind: str | None = field(default=None, compare=False)
    uppers: dict[str, str] = field(default_factory=dict, compare=False)
    leased: frozenset[Address] = field(default_factory=frozenset, compare=False)
    dynamic_routes: frozenset[RouteSpec] = field(default_factory=frozenset, compare=False)
    ipv6: dict[str, str] = field(default_factory=dict, compare=False)
    loopback: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class ActualKernel:
    """The links ovsnvgre cares about, by name; a link that does not exist is absent.

    ``stale``: the VM ports whose device ovs-vswitchd no longer receives from (the
    device was deleted and re-created under the same name; see handles.py), each
    with the device's interface index now.
    """

    links: dict[str, LinkState]
    # Every address configured on any link of this machine, with its link's name.
    everywhere: dict[Address, str] = field(default_factory=dict, compare=False)
    stale: dict[str, int] = field(default_factory=dict)

    def get(self, name: str | None) -> LinkState | None:
        """The link called ``name``, or None (also for ``name`` None)."""
        return self.links.get(name) if name else None
