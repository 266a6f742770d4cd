"""The netlink edge (pyroute2): read and change links, addresses and routes."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovsnvgre import family
from ovsnvgre.actual import ActualKernel, Address, LinkState
from ovsnvgre.changes import (
    AddressChange,
    Ipv6Setting,
    KernelChange,
    LinkDown,
    LinkUp,
    RouteChange,
)
from ovsnvgre.desired import RouteSpec
from ovsnvgre.errors import SystemFailure

log = logging.getLogger(__name__)

MAIN_TABLE = 254
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
RT_SCOPE_UNIVERSE = 0
# Routes the kernel makes by itself (connected subnets) or learns from router
# advertisements follow their address or link; only the others are moved.
PROTO_KERNEL = 2
PROTO_RA = 9
PROTO_DHCP = 16
INFINITE = 0xFFFFFFFF  # an address's valid lifetime when it never expires
IFA_F_NODAD = 0x02
RTNH_F_ONLINK = 0x04
# The IPv6 settings of a link that decide whether (and how fast) it takes addresses.
IPV6_SYSCTLS = ("disable_ipv6", "accept_dad")
# Links stacked on a NIC (its "upper" devices) that preflight names.
STACKED_KINDS = ("vlan", "macvlan", "macvtap", "ipvlan", "ipvtap")


def _ipr() -> Any:
    from pyroute2 import IPRoute  # imported here: ~0.15 s that `--help` need not pay

    return IPRoute()


def read(names: Iterable[str]) -> ActualKernel:
    """The state of each link among ``names`` that exists (global addresses, movable
    routes, and what preflight needs), and every global address of the machine."""
    links = {}
    with _ipr() as ipr:
        # One dump of every link serves names, masters and stacked devices alike: each
        # netlink message costs pyroute2 ~0.5 ms to parse.
        every = {msg["index"]: msg for msg in ipr.get_links()}
        by_name = {msg.get("ifname"): msg for msg in every.values()}
        for name in names:
            link = _read_link(ipr, by_name.get(name), every)
            if link is not None:
                links[name] = link
        everywhere = {}
        for msg in ipr.get_addr():
            if msg["scope"] == RT_SCOPE_UNIVERSE and msg.get("address"):
                address = ipaddress.ip_interface(f"{msg.get('address')}/{msg['prefixlen']}")
                owner = every.get(msg["index"])
                everywhere[address] = owner.get("ifname") if owner else str(msg["index"])
    return ActualKernel(links, everywhere)


def local_addresses() -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address configured on this machine (this network namespace)."""
    with _ipr() as ipr:
        return {ipaddress.ip_address(msg.get("address")) for msg in ipr.get_addr()
                if msg.get("address")}


@dataclass(frozen=True)
class NextHop:
    """How the kernel would send to an address now."""

    link: str
    gateway: ipaddress.IPv4Address | None  # None: the address is on-link
    source: ipaddress.IPv4Address | None


def next_hop(address: ipaddress.IPv4Address) -> NextHop | None:
    """The kernel's route to ``address``, or None when it has none."""
    with _ipr() as ipr:
        try:
            msg = ipr.route("get", dst=str(address))[0]
        except Exception:  # noqa: BLE001 - NetlinkError: unreachable, no route
            return None
        index = msg.get("oif")
        links = ipr.get_links(index) if index else []
        if not links:
            return None
        gateway, source = msg.get("gateway"), msg.get("prefsrc")
        return NextHop(link=links[0].get("ifname"),
                       gateway=ipaddress.IPv4Address(gateway) if gateway else None,
                       source=ipaddress.IPv4Address(source) if source else None)


def ipv4_addresses(link: str) -> list[ipaddress.IPv4Interface]:
    """The IPv4 addresses of ``link`` (none when it does not exist)."""
    with _ipr() as ipr:
        index = _index(ipr, link)
        if index is None:
            return []
        return [ipaddress.IPv4Interface(f"{msg.get('address')}/{msg['prefixlen']}")
                for msg in ipr.get_addr(index=index, family=socket.AF_INET)]


def link_indexes(names: Iterable[str]) -> dict[str, int]:
    """The kernel's interface index of each link among ``names`` that exists (one dump)."""
    wanted = set(names)
    if not wanted:
        return {}
    with _ipr() as ipr:
        return {link.get("ifname"): link["index"] for link in ipr.get_links()
                if link.get("ifname") in wanted}


def _index(ipr: Any, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def _kind(link: Any) -> str | None:
    info = link.get("IFLA_LINKINFO")
    return info.get("IFLA_INFO_KIND") if info is not None else None


def _ipv6_sysctls(name: str) -> dict[str, str]:
    values = {}
    for setting in IPV6_SYSCTLS:
        try:
            values[setting] = Path(f"/proc/sys/net/ipv6/conf/{name}/{setting}").read_text().strip()
        except OSError:
            pass  # no IPv6 in this kernel, or no such link any more
    return values


def _read_link(ipr: Any, link: Any, every: dict[int, Any]) -> LinkState | None:  # noqa: C901 - one decision per branch, each documented; splitting would scatter it
    if link is None:
        return None
    index, name = link["index"], link.get("ifname")
    addresses: set[Address] = set()
    leased: set[Address] = set()
    for msg in ipr.get_addr(index=index):
        if msg["scope"] != RT_SCOPE_UNIVERSE or not msg.get("address"):
            continue
        address = ipaddress.ip_interface(f"{msg.get('address')}/{msg['prefixlen']}")
        addresses.add(address)
        cache = msg.get("IFA_CACHEINFO") or {}
        if cache.get("ifa_valid", INFINITE) != INFINITE:
            leased.add(address)
    routes: set[RouteSpec] = set()
    dynamic: set[RouteSpec] = set()
    for af in (socket.AF_INET, socket.AF_INET6):
        for msg in ipr.get_routes(family=af, table=MAIN_TABLE, oif=index):
            if msg["proto"] == PROTO_KERNEL or msg.get("oif") != index:
                continue
            if msg.get("multipath"):
                continue  # multipath routes are not ours to move; see the README
            zero = "0.0.0.0" if af == socket.AF_INET else "::"  # noqa: S104 - a route's unspecified destination, not a socket binding
            dst = ipaddress.ip_network(f"{msg.get('dst') or zero}/{msg['dst_len']}")
            gateway = msg.get("gateway")
            route = RouteSpec(dst=dst, gateway=ipaddress.ip_address(gateway) if gateway else None,
                              metric=msg.get("priority") or 0, proto=msg["proto"],
                              onlink=bool(msg["flags"] & RTNH_F_ONLINK))
            if msg["proto"] in (PROTO_RA, PROTO_DHCP):
                dynamic.add(route)
            if msg["proto"] != PROTO_RA:
                routes.add(route)
    master_link = every.get(link.get("IFLA_MASTER") or -1)
    master = master_link.get("ifname") if master_link is not None else None
    master_kind = _kind(master_link) if master_link is not None else None
    uppers = {}
    for other in every.values():
        # Only devices stacked on this one, in this namespace: a veth's peer names it
        # in IFLA_LINK too, and a link of another namespace names an index of its own.
        kind = _kind(other)
        if other.get("IFLA_LINK") == index and other["index"] != index \
                and kind in STACKED_KINDS and other.get("IFLA_LINK_NETNSID") is None:
            uppers[other.get("ifname")] = kind
    return LinkState(name=name, up=bool(link["flags"] & IFF_UP),
                     addresses=frozenset(addresses), routes=frozenset(routes),
                     mtu=link.get("mtu") or 0, mac=link.get("IFLA_ADDRESS") or "",
                     master=master, master_kind=master_kind, uppers=uppers,
                     leased=frozenset(leased), dynamic_routes=frozenset(dynamic),
                     ipv6=_ipv6_sysctls(name), loopback=bool(link["flags"] & IFF_LOOPBACK))


def apply(changes: Iterable[KernelChange], wait_for: Iterable[str] = ()) -> int:
    """Run the changes in order, after waiting for each link of ``wait_for`` to exist;
    then announce each address added to a link that is up.  Returns how many changes
    were made; raises SystemFailure at the first that fails (the earlier ones stay)."""
    count = 0
    moved: list[AddressChange] = []
    with _ipr() as ipr:
        for name in wait_for:
            _wait_for_link(ipr, name)
        indexes: dict[str, int] = {}  # links are neither made nor renamed here
        for change in changes:
            log.debug("netlink: %s", change.describe())
            try:
                _apply_one(ipr, change, indexes)
            except SystemFailure:
                raise
            except Exception as exc:  # pyroute2 raises NetlinkError and OSError
                raise SystemFailure(f"could not {change.describe()}: {_reason(exc)}") from exc
            count += 1
            if isinstance(change, AddressChange) and change.action == "add":
                moved.append(change)
        for change in moved:
            link = ipr.get_links(indexes[change.link])[0]
            if link["flags"] & IFF_UP:
                _announce(change.link, link.get("address"), change.address.ip)
    return count


def _announce(ifname: str, mac: str | None, address: family.IPAddress) -> None:
    """Tell the link that ``address`` is now at ``mac`` (gratuitous ARP for IPv4, an
    unsolicited Neighbour Advertisement for IPv6).

    The tep port takes the uplink's MAC, so a moved address keeps its MAC; the
    announcement still refreshes neighbours whose entry went stale meanwhile, and
    covers an uplink whose MAC the tep port could not take.
    """
    if not mac:
        return
    frame = family.announcement(bytes.fromhex(mac.replace(":", "")), address)
    try:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
            sock.bind((ifname, 0))
            sock.send(frame)
    except OSError:
        pass  # an optimisation: the neighbours re-learn the MAC by themselves later


def _reason(exc: Exception) -> str:
    code = getattr(exc, "code", None)
    if isinstance(code, int) and code > 0:
        return os.strerror(code)
    return str(exc)


def wait_for_links(names: Iterable[str]) -> None:
    """Wait (5 s at most each) for ovs-vswitchd to create each link; raises SystemFailure."""
    names = list(names)
    if names:
        with _ipr() as ipr:
            for name in names:
                _wait_for_link(ipr, name)


def _wait_for_link(ipr: Any, name: str, timeout: float = 5.0) -> None:
    # ovs-vswitchd creates an internal port's device when it applies the
    # transaction; on the userspace datapath the tap can show up a moment later.
    deadline = time.monotonic() + timeout
    while _index(ipr, name) is None:
        if time.monotonic() > deadline:
            raise SystemFailure(f"ovs-vswitchd did not create the device {name} within "
                                f"{timeout:.0f} s")
        time.sleep(0.05)


def _write_ipv6_setting(change: Ipv6Setting) -> None:
    path = Path(f"/proc/sys/net/ipv6/conf/{change.link}/{change.setting}")
    try:
        path.write_text(change.value)
    except OSError as exc:
        raise SystemFailure(f"could not {change.describe()}: {exc.strerror}") from None


def _apply_one(ipr: Any, change: KernelChange, indexes: dict[str, int]) -> None:  # noqa: C901 - one decision per branch, each documented; splitting would scatter it
    index = indexes.get(change.link)
    if index is None:
        index = _index(ipr, change.link)
        if index is None:
            raise SystemFailure(f"could not {change.describe()}: no such device {change.link}")
        indexes[change.link] = index
    if isinstance(change, Ipv6Setting):
        _write_ipv6_setting(change)
        return
    if isinstance(change, LinkUp):
        ipr.link("set", index=index, state="up")
    elif isinstance(change, LinkDown):
        ipr.link("set", index=index, state="down")
    elif isinstance(change, AddressChange):
        # An address that moves was in use already: no duplicate address detection,
        # which would keep it tentative (unusable) for a second or more.
        flags = {"flags": IFA_F_NODAD} if change.action == "add" and \
            change.address.version == 6 else {}
        ipr.addr(change.action, index=index, address=str(change.address.ip),
                 prefixlen=change.address.network.prefixlen, **flags)
    elif isinstance(change, RouteChange):
        route = change.route
        kwargs: dict[str, Any] = {"dst": str(route.dst), "oif": index, "table": MAIN_TABLE,
                                  "proto": route.proto}
        if route.gateway is not None:
            kwargs["gateway"] = str(route.gateway)
        if route.metric:
            kwargs["priority"] = route.metric
        if route.onlink:
            kwargs["flags"] = RTNH_F_ONLINK
        if change.action == "delete":
            ipr.route("del", **kwargs)
        else:
            ipr.route("add", **kwargs)
