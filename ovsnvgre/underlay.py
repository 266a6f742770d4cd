"""The uplink -> tep move: what the uplink held, where it goes, and its saved record.  Pure.

`up` enslaves the uplink NIC to the underlay bridge; the kernel then no longer
sends through the uplink's addresses, so its addresses and routes move to the tep
port (which keeps the PA as well).  What the uplink held is recorded once, on the
uplink's Port row (``ovsnvgre-saved-addresses`` / ``ovsnvgre-saved-routes``), so
that `down` puts back exactly that.  The one encoding of an address or a route
as JSON-ready data is here; the rollback file (safe/snapshot.py) uses it too.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import replace
from typing import Any

from ovsnvgre.actual import ActualKernel, ActualPort, ActualSwitch, Address, LinkState
from ovsnvgre.changes import AddressChange, Ipv6Setting, KernelChange, LinkUp, RouteChange
from ovsnvgre.desired import OWNER_KEY, ROLE_KEY, DesiredHost, Role, RouteSpec
from ovsnvgre.errors import SystemFailure

# On the uplink port: what sat on the uplink before ovsnvgre moved it to the tep
# port, so that `down` can put it back.  Written once, when the uplink is enslaved.
SAVED_ADDRESSES_KEY = "ovsnvgre-saved-addresses"
SAVED_ROUTES_KEY = "ovsnvgre-saved-routes"
# On the tep port: what ovsnvgre put on it, so that it removes only that (a routing
# daemon's routes or a keepalived address on the tep port are not ours).
TEP_ADDRESSES_KEY = "ovsnvgre-tep-addresses"
TEP_ROUTES_KEY = "ovsnvgre-tep-routes"
# Records, not managed columns: never removed as stale, carried over when a row moves.
SAVED_KEYS = (SAVED_ADDRESSES_KEY, SAVED_ROUTES_KEY, TEP_ADDRESSES_KEY, TEP_ROUTES_KEY)

Saved = tuple[list[Address], list[RouteSpec]]


# --- the one encoding -------------------------------------------------------------


def route_to_dict(route: RouteSpec) -> dict[str, Any]:
    """A route as JSON-ready data: dst, gateway (or None), metric, proto (rtnetlink),
    onlink."""
    return {"dst": str(route.dst), "gateway": str(route.gateway) if route.gateway else None,
            "metric": route.metric, "proto": route.proto, "onlink": route.onlink}


def route_from_dict(data: dict[str, Any]) -> RouteSpec:
    """The inverse of route_to_dict; raises KeyError, TypeError or ValueError when damaged.

    A record written before routes carried their protocol reads as static (4), and
    without onlink.
    """
    return RouteSpec(dst=ipaddress.ip_network(data["dst"]),
                     gateway=ipaddress.ip_address(data["gateway"]) if data["gateway"] else None,
                     metric=int(data["metric"]), proto=int(data.get("proto", 4)),
                     onlink=bool(data.get("onlink", False)))


def encode_saved(addresses: list[Address], routes: list[RouteSpec]) -> dict[str, str]:
    """The uplink port's external_ids that record what the uplink held."""
    return {
        SAVED_ADDRESSES_KEY: json.dumps([str(a) for a in addresses]),
        SAVED_ROUTES_KEY: json.dumps([route_to_dict(r) for r in routes]),
    }


def encode_tep(changes: list[KernelChange]) -> dict[str, str]:
    """The tep port's external_ids that record what ovsnvgre puts on it (``changes``:
    the additions tep_contents lists)."""
    addresses = sorted(str(c.address) for c in changes if isinstance(c, AddressChange))
    routes = [route_to_dict(c.route) for c in changes if isinstance(c, RouteChange)]
    return {TEP_ADDRESSES_KEY: json.dumps(addresses), TEP_ROUTES_KEY: json.dumps(routes)}


def recorded_tep(port: ActualPort | None) -> Saved | None:
    """What ovsnvgre recorded it put on the tep port; None when there is no record (a
    tep port made before records were kept: then everything on it counts as ours)."""
    if port is None or TEP_ADDRESSES_KEY not in port.external_ids:
        return None
    try:
        addresses = [ipaddress.ip_interface(a)
                     for a in json.loads(port.external_ids[TEP_ADDRESSES_KEY])]
        routes = [route_from_dict(r)
                  for r in json.loads(port.external_ids.get(TEP_ROUTES_KEY, "[]"))]
    except (ValueError, KeyError, TypeError):
        return None
    return addresses, routes


def decode_saved(ids: dict[str, str]) -> Saved:
    """What encode_saved recorded; raises SystemFailure when the record is damaged."""
    try:
        addresses = [ipaddress.ip_interface(a) for a in json.loads(ids[SAVED_ADDRESSES_KEY])]
        routes = [route_from_dict(r) for r in json.loads(ids.get(SAVED_ROUTES_KEY, "[]"))]
    except (ValueError, KeyError, TypeError) as exc:
        raise SystemFailure(f"the uplink port's record of its addresses is damaged ({exc}); "
                            "restore the uplink's addresses by hand") from None
    return addresses, routes


# --- what moves -------------------------------------------------------------------


def _movable(link: LinkState | None) -> Saved:
    if link is None:
        return [], []
    return sorted(link.addresses, key=str), sorted(link.routes, key=str)


def saved_underlay(uplink_port: ActualPort | None, uplink: LinkState | None) -> Saved:
    """What belongs on the uplink when ovsnvgre is not there.

    Once the uplink is on the bridge this is what the uplink port row records;
    before that it is what the uplink holds now.
    """
    if uplink_port is not None and SAVED_ADDRESSES_KEY in uplink_port.external_ids:
        return decode_saved(uplink_port.external_ids)
    return _movable(uplink)


def owned_uplinks(desired: DesiredHost, switch: ActualSwitch,
                  prior: dict[str, ActualPort] | None = None) -> list[ActualPort]:
    """The uplink ports this fabric put on the switch (the fabric's, or an earlier one),
    with their records of what the uplink held.

    ``prior``: the owned ports of the state a run that died started from (its rollback
    snapshot).  An uplink row that run deleted (a `down` killed after its OVSDB
    transaction) took the only other copy of the record with it: it comes from there.
    """
    found = {port.name: port for port in switch.ports.values()
             if port.external_ids.get(OWNER_KEY) == desired.owner
             and port.external_ids.get(ROLE_KEY) == Role.UPLINK}
    for name, port in (prior or {}).items():
        if port.external_ids.get(ROLE_KEY) != Role.UPLINK \
                or SAVED_ADDRESSES_KEY not in port.external_ids:
            continue
        now = found.get(name)
        if now is None or SAVED_ADDRESSES_KEY not in now.external_ids:
            found[name] = port
    return [found[name] for name in sorted(found)]


def links_to_read(desired: DesiredHost, switch: ActualSwitch,
                  prior: dict[str, ActualPort] | None = None) -> list[str]:
    """The links whose addresses and routes the plan needs."""
    names = {desired.tep_port, *(port.name for port in owned_uplinks(desired, switch, prior))}
    if desired.uplink:
        names.add(desired.uplink)
    return sorted(names)


def with_tep_mac(desired: DesiredHost, kernel: ActualKernel) -> DesiredHost:
    """``desired`` with the tep port taking the uplink's MAC (the Interface's mac column,
    as OVS gives a bridge's local port its NIC's MAC): neighbour caches, DHCP
    reservations and switch port security stay valid when the PA moves.  Unchanged
    when there is no uplink on this machine."""
    uplink = kernel.get(desired.uplink)
    tep = desired.ports.get(desired.tep_port)
    if uplink is None or not uplink.mac or tep is None:
        return desired
    return replace(desired, ports={**desired.ports, tep.name: replace(tep, mac=uplink.mac)})


def _ipv6_settings(desired: DesiredHost, kernel: ActualKernel) -> list[KernelChange]:
    """IPv6 on the tep port as the uplink had it, before IPv6 addresses arrive there
    (a host that disables IPv6 on new links by default would refuse them)."""
    uplink, tep = kernel.get(desired.uplink), kernel.get(desired.tep_port)
    wanted = {"disable_ipv6": "0"}
    if uplink is not None and "accept_dad" in uplink.ipv6:
        wanted["accept_dad"] = uplink.ipv6["accept_dad"]
    have = tep.ipv6 if tep is not None else {}
    return [Ipv6Setting(desired.tep_port, setting, value)
            for setting, value in wanted.items() if have.get(setting) != value]


def tep_contents(desired: DesiredHost, saved: Saved) -> list[KernelChange]:
    """Everything the tep port should hold, as the changes that would add it."""
    tep = desired.tep_port
    saved_addresses, saved_routes = saved if desired.uplink else ([], [])
    addresses = sorted({desired.pa, *saved_addresses}, key=str)
    routes = list(saved_routes)
    taken = {route.dst for route in routes}
    routes += [route for route in desired.peer_routes if route.dst not in taken]
    return [*(AddressChange("add", tep, a) for a in addresses),
            *(RouteChange("add", tep, r) for r in routes)]


def diff_kernel(desired: DesiredHost, kernel: ActualKernel, saved: Saved,  # noqa: C901 - one decision per branch, each documented; splitting would scatter it
                recorded: Saved | None = None) -> list[KernelChange]:
    """Move what the uplink held onto the tep port, add the PA and the peer routes.

    In the order they must run: off the uplink first, then onto the tep port
    (addresses, link up, then the routes whose gateways need the addresses).  Of what
    the tep port holds, only what ``recorded`` says ovsnvgre put there is removed
    (everything, when there is no record).
    """
    tep_name = desired.tep_port
    uplink, tep = kernel.get(desired.uplink), kernel.get(tep_name)
    saved_addresses, saved_routes = saved
    changes: list[KernelChange] = []
    if desired.uplink and uplink is not None:
        for route in saved_routes:
            if route in uplink.routes:
                changes.append(RouteChange("delete", desired.uplink, route))
        for address in saved_addresses:
            if address in uplink.addresses:
                changes.append(AddressChange("delete", desired.uplink, address))
        if not uplink.up:
            changes.append(LinkUp(desired.uplink))
    want = tep_contents(desired, saved)
    want_addresses = {c.address for c in want if isinstance(c, AddressChange)}
    want_routes = [c.route for c in want if isinstance(c, RouteChange)]
    have_addresses = tep.addresses if tep else frozenset()
    have_routes = tep.routes if tep else frozenset()
    ours_addresses = have_addresses if recorded is None else set(recorded[0])
    ours_routes = have_routes if recorded is None else set(recorded[1])
    for route in sorted((have_routes & ours_routes) - set(want_routes), key=str):
        changes.append(RouteChange("delete", tep_name, route))
    for address in sorted((have_addresses & ours_addresses) - want_addresses, key=str):
        changes.append(AddressChange("delete", tep_name, address))
    if any(a.version == 6 for a in want_addresses - have_addresses):
        changes += _ipv6_settings(desired, kernel)
    for address in sorted(want_addresses - have_addresses, key=str):
        changes.append(AddressChange("add", tep_name, address))
    if tep is None or not tep.up:
        changes.append(LinkUp(tep_name))
    for route in want_routes:
        if route not in have_routes:
            changes.append(RouteChange("add", tep_name, route))
    return changes


def restore_uplink(port: ActualPort, link: LinkState | None, kept: list[KernelChange]
                   ) -> list[KernelChange]:
    """Put back on an uplink that leaves the bridge what `up` moved off it.

    What the tep port keeps (``kept``: the PA when it stays, say) is not doubled.
    Raises SystemFailure when the port's record is damaged.
    """
    if link is None:
        return []
    kept_addresses = {c.address for c in kept if isinstance(c, AddressChange)}
    kept_routes = {c.route.dst for c in kept if isinstance(c, RouteChange)}
    addresses, routes = decode_saved(port.external_ids)
    changes: list[KernelChange] = [AddressChange("add", port.name, a) for a in addresses
                                   if a not in link.addresses and a not in kept_addresses]
    changes += [RouteChange("add", port.name, r) for r in routes
                if r not in link.routes and r.dst not in kept_routes]
    return changes
