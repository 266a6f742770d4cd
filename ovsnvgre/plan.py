"""diff(desired, actual) -> Plan, and how a Plan prints.  Pure: no I/O."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ovsnvgre.desired import (
    OWNER_KEY,
    ROLE_KEY,
    ROLE_UPLINK,
    SAVED_ADDRESSES_KEY,
    SAVED_KEYS,
    SAVED_ROUTES_KEY,
    BridgeSpec,
    HostState,
    PortSpec,
    RouteSpec,
)
from ovsnvgre.errors import SystemFailure
from ovsnvgre.flows import TABLE_NAMES, Flow

Address = ipaddress.IPv4Interface | ipaddress.IPv6Interface


# --- what the switch and the kernel hold (filled in by ovsdb.py and netlink.py) ---


@dataclass(frozen=True)
class ActualBridge:
    name: str
    datapath_type: str
    protocols: tuple[str, ...]
    fail_mode: str | None
    external_ids: dict[str, str]
    ports: tuple[str, ...]


@dataclass(frozen=True)
class ActualPort:
    name: str
    bridge: str | None
    iface_type: str
    options: dict[str, str]
    external_ids: dict[str, str]
    iface_external_ids: dict[str, str]
    interfaces: int = 1
    bfd: dict[str, str] = field(default_factory=dict)
    mtu_request: int | None = None


class PortStatus(dict[str, tuple[int | None, str | None]]):
    """Interface name -> (OpenFlow port number or None, ovs-vswitchd's error or None)."""

    def only(self, names: set[str]) -> PortStatus:
        return PortStatus({name: value for name, value in self.items() if name in names})

    def live(self) -> set[str]:
        return {name for name, (ofport, _) in self.items() if ofport is not None and ofport > 0}

    def refused(self) -> dict[str, str]:
        return {name: error or "no OpenFlow port number"
                for name, (ofport, error) in self.items() if error or ofport == -1}


@dataclass(frozen=True)
class SwitchState:
    bridges: dict[str, ActualBridge]
    ports: dict[str, ActualPort]
    interfaces: PortStatus = field(default_factory=PortStatus)

    def bridge_external_ids(self) -> dict[str, dict[str, str]]:
        return {name: bridge.external_ids for name, bridge in self.bridges.items()}


@dataclass(frozen=True)
class LinkState:
    name: str
    up: bool
    addresses: frozenset[Address]
    routes: frozenset[RouteSpec]
    mtu: int = field(default=0, compare=False)


@dataclass(frozen=True)
class KernelState:
    """The links ovsnvgre cares about, by name; a link that does not exist is absent."""

    links: dict[str, LinkState]

    def get(self, name: str | None) -> LinkState | None:
        return self.links.get(name) if name else None


# --- the plan ---------------------------------------------------------------------


@dataclass(frozen=True)
class BridgeCreate:
    spec: BridgeSpec

    def describe(self) -> str:
        return f"create bridge {self.spec.name} (datapath_type={self.spec.datapath_type})"


@dataclass(frozen=True)
class BridgeUpdate:
    name: str
    columns: dict[str, Any]
    external_ids: dict[str, str]
    stale_ids: tuple[str, ...]

    def describe(self) -> str:
        changed = sorted([*self.columns, *(["external_ids"] if self.external_ids or
                                           self.stale_ids else [])])
        return f"update bridge {self.name}: {', '.join(changed)}"


@dataclass(frozen=True)
class BridgeDelete:
    name: str

    def describe(self) -> str:
        return f"delete bridge {self.name}"


@dataclass(frozen=True)
class PortCreate:
    spec: PortSpec
    extra_ids: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        kind = f" type={self.spec.iface_type}" if self.spec.iface_type else ""
        options = "".join(f" {k}={v}" for k, v in sorted(self.spec.options.items()))
        return f"add {self.spec.role} port {self.spec.name} to {self.spec.bridge}{kind}{options}"


@dataclass(frozen=True)
class PortUpdate:
    spec: PortSpec
    iface_type: str | None
    options: dict[str, str] | None
    external_ids: dict[str, str]
    stale_ids: tuple[str, ...]
    reason: str
    bfd: dict[str, str] | None = None
    mtu_request: int | None = None

    def describe(self) -> str:
        return f"repair {self.spec.role} port {self.spec.name}: {self.reason}"


@dataclass(frozen=True)
class PortDelete:
    name: str
    bridge: str | None
    role: str

    def describe(self) -> str:
        where = f" from {self.bridge}" if self.bridge else ""
        return f"remove {self.role} port {self.name}{where}"


@dataclass(frozen=True)
class AddressChange:
    action: str  # "add" | "delete"
    link: str
    address: Address

    def describe(self) -> str:
        preposition = "to" if self.action == "add" else "from"
        return f"{self.action} address {self.address} {preposition} {self.link}"


@dataclass(frozen=True)
class RouteChange:
    action: str  # "add" | "delete"
    link: str
    route: RouteSpec

    def describe(self) -> str:
        return f"{self.action} route {self.route} dev {self.link}"


@dataclass(frozen=True)
class LinkUp:
    link: str

    def describe(self) -> str:
        return f"set link {self.link} up"


@dataclass(frozen=True)
class LinkDown:
    link: str

    def describe(self) -> str:
        return f"set link {self.link} down"


OvsdbChange = (BridgeCreate | BridgeUpdate | BridgeDelete | PortCreate | PortUpdate
               | PortDelete)
KernelChange = AddressChange | RouteChange | LinkUp | LinkDown


@dataclass(frozen=True)
class FlowChanges:
    """The flow-mods that take the bridge's owned flows to the desired pipeline."""

    bridge: str
    add: tuple[Flow, ...] = ()
    delete: tuple[Flow, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.add or self.delete)

    def per_table(self) -> dict[str, tuple[int, int]]:
        counts: dict[str, tuple[int, int]] = {}
        for flows, index in ((self.add, 0), (self.delete, 1)):
            for flow in flows:
                name = TABLE_NAMES.get(flow.table, str(flow.table))
                pair = list(counts.get(name, (0, 0)))
                pair[index] += 1
                counts[name] = (pair[0], pair[1])
        return counts

    def lines(self, verbose: bool = False) -> list[str]:
        if verbose:
            return ([f"add flow {flow}" for flow in sorted(self.add, key=str)]
                    + [f"delete flow {flow}" for flow in sorted(self.delete, key=str)])
        return [f"flows in table {table} of {self.bridge}: +{added} -{deleted}"
                for table, (added, deleted) in sorted(self.per_table().items())]


def diff_flows(bridge: str, desired: set[Flow], installed: set[Flow]) -> FlowChanges:
    """A flow whose match is installed with other actions is re-added (which replaces it)."""
    if desired == installed:  # a converged bridge: one set comparison, no keyed copies
        return FlowChanges(bridge)
    want = {flow.key: flow for flow in desired}
    have = {flow.key: flow for flow in installed}
    add = tuple(flow for key, flow in want.items() if have.get(key) != flow)
    delete = tuple(flow for key, flow in have.items() if key not in want)
    return FlowChanges(bridge, add, delete)


@dataclass(frozen=True)
class Plan:
    host: str
    ovsdb: tuple[OvsdbChange, ...] = ()
    # In the order they must run: away from the uplink first, then onto the tep port.
    kernel: tuple[KernelChange, ...] = ()
    flows: FlowChanges | None = None
    notes: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.ovsdb and not self.kernel and not self.flows

    def lines(self, verbose: bool = False) -> list[str]:
        lines = [change.describe() for change in (*self.ovsdb, *self.kernel)]
        if self.flows:
            lines += self.flows.lines(verbose)
        return lines

    def as_dict(self) -> dict[str, Any]:
        flows = self.flows or FlowChanges("")
        return {"host": self.host, "changes": self.lines(), "notes": list(self.notes),
                "ovsdb_changes": len(self.ovsdb), "kernel_changes": len(self.kernel),
                "flow_changes": {"add": len(flows.add), "delete": len(flows.delete),
                                 "per_table": {t: {"add": a, "delete": d}
                                               for t, (a, d) in flows.per_table().items()},
                                 "flows": flows.lines(verbose=True)}}


# --- ownership -----------------------------------------------------------------------


def is_owned(external_ids: Mapping[str, str], owner: str) -> bool:
    return external_ids.get(OWNER_KEY) == owner


def _managed(ids: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in ids.items() if k.startswith("ovsnvgre-") and k not in SAVED_KEYS}


def _ids_diff(want: dict[str, str], have: dict[str, str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """Keys to set and stale ovsnvgre keys to remove; foreign keys are never touched."""
    have_managed = _managed(have)
    to_set = {k: v for k, v in want.items() if have_managed.get(k) != v}
    stale = tuple(sorted(set(have_managed) - set(want)))
    return to_set, stale


# --- OVSDB diff ----------------------------------------------------------------------


def diff_switch(desired: HostState, actual: SwitchState, removing: bool = False) -> tuple[
        list[OvsdbChange], list[str]]:
    """The OVSDB changes that take ``actual`` to ``desired`` (or to nothing, if removing).

    Raises SystemFailure when the fabric asks for a name that something else owns.
    """
    return diff_rows(desired.owner, {} if removing else desired.bridges,
                     {} if removing else desired.ports, actual)


def diff_rows(owner: str, want_bridges: dict[str, BridgeSpec], want_ports: dict[str, PortSpec],
              actual: SwitchState) -> tuple[list[OvsdbChange], list[str]]:
    """The OVSDB changes that make ``owner``'s rows exactly ``want_bridges`` and
    ``want_ports``, leaving every other row alone."""
    changes: list[OvsdbChange] = []
    notes: list[str] = []

    for name, spec in want_bridges.items():
        have = actual.bridges.get(name)
        if have is None:
            changes.append(BridgeCreate(spec))
            continue
        if not is_owned(have.external_ids, owner):
            raise SystemFailure(_foreign("bridge", name, have.external_ids, owner))
        columns: dict[str, Any] = {}
        if have.datapath_type != spec.datapath_type:
            columns["datapath_type"] = spec.datapath_type
        if tuple(sorted(have.protocols)) != tuple(sorted(spec.protocols)):
            columns["protocols"] = list(spec.protocols)
        if have.fail_mode != spec.fail_mode:
            columns["fail_mode"] = [spec.fail_mode] if spec.fail_mode else []
        to_set, stale = _ids_diff(spec.external_ids, have.external_ids)
        if columns or to_set or stale:
            changes.append(BridgeUpdate(name, columns, to_set, stale))

    for name, spec in want_ports.items():
        have = actual.ports.get(name)
        if have is None:
            changes.append(PortCreate(spec))
            continue
        owned = is_owned(have.external_ids, owner)
        if not owned:
            if spec.adopt_existing and have.bridge == spec.bridge:
                continue  # the hypervisor's port, already where the fabric wants it
            where = f"on bridge {have.bridge}" if have.bridge else "in the database"
            raise SystemFailure(f"port {name} already exists {where} and was not created by "
                                f"ovsnvgre (fabric {owner!r}); "
                                f"{_foreign_hint(have.external_ids, owner)}")
        if have.bridge != spec.bridge:
            changes.append(PortDelete(name, have.bridge, spec.role))
            changes.append(PortCreate(spec, _saved_ids(have)))
            continue
        update = _port_update(spec, have)
        if update is not None:
            changes.append(update)

    owned_bridges = {name for name, br in actual.bridges.items()
                     if is_owned(br.external_ids, owner)}
    for name, have in sorted(actual.ports.items()):
        if name in want_ports or name in actual.bridges or not is_owned(have.external_ids, owner):
            continue
        if have.bridge in owned_bridges and have.bridge not in want_bridges:
            continue  # goes with its bridge
        changes.append(PortDelete(name, have.bridge, have.external_ids.get(ROLE_KEY, "owned")))
    for name in sorted(owned_bridges - set(want_bridges)):
        foreign = [port for port in actual.bridges[name].ports
                   if port != name and not is_owned(actual.ports[port].external_ids, owner)]
        if foreign:
            # Deleting the bridge would delete ports that are not ours.
            for port in actual.bridges[name].ports:
                if port != name and port not in foreign:
                    changes.append(PortDelete(port, name, actual.ports[port].external_ids.get(
                        ROLE_KEY, "owned")))
            notes.append(f"kept bridge {name}: it holds ports ovsnvgre did not create "
                         f"({', '.join(sorted(foreign))})")
            continue
        changes.append(BridgeDelete(name))
    return changes, notes


def _saved_ids(have: ActualPort) -> dict[str, str]:
    return {k: v for k, v in have.external_ids.items() if k in SAVED_KEYS}


def _port_update(spec: PortSpec, have: ActualPort) -> PortUpdate | None:
    reasons = []
    iface_type = None
    options = None
    if have.iface_type != spec.iface_type:
        iface_type = spec.iface_type
        reasons.append(f"type {have.iface_type or 'system'} -> {spec.iface_type or 'system'}")
    if have.options != spec.options:
        options = spec.options
        reasons.append(f"options {_fmt_map(have.options)} -> {_fmt_map(spec.options)}")
    bfd = None
    if have.bfd != spec.bfd:
        bfd = spec.bfd
        reasons.append(f"bfd {_fmt_map(have.bfd)} -> {_fmt_map(spec.bfd)}")
    mtu_request = None
    if spec.mtu_request is not None and have.mtu_request != spec.mtu_request:
        mtu_request = spec.mtu_request
        reasons.append(f"mtu_request {have.mtu_request or 'unset'} -> {spec.mtu_request}")
    to_set, stale = _ids_diff(spec.external_ids, have.external_ids)
    iface_set, iface_stale = _ids_diff(spec.external_ids, have.iface_external_ids)
    if to_set or stale or iface_set or iface_stale:
        reasons.append("external_ids")
    if not reasons:
        return None
    return PortUpdate(spec, iface_type, options, spec.external_ids,
                      tuple(sorted(set(stale) | set(iface_stale))), "; ".join(reasons),
                      bfd, mtu_request)


def _fmt_map(values: dict[str, str]) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(values.items())) + "}"


def _foreign(kind: str, name: str, ids: dict[str, str], owner: str) -> str:
    return (f"{kind} {name} already exists and was not created by ovsnvgre (fabric "
            f"{owner!r}); {_foreign_hint(ids, owner)}")


def _foreign_hint(ids: dict[str, str], owner: str) -> str:
    other = ids.get(OWNER_KEY)
    if other and other != owner:
        return (f"it belongs to fabric {other!r}: run `ovsnvgre down` with that fabric "
                "first, or choose another name")
    return "ovsnvgre never changes what it did not create: remove it or choose another name"


# --- kernel diff ---------------------------------------------------------------------


def _movable(link: LinkState | None) -> tuple[list[Address], list[RouteSpec]]:
    if link is None:
        return [], []
    return sorted(link.addresses, key=str), sorted(link.routes, key=str)


def saved_underlay(uplink_port: ActualPort | None, uplink: LinkState | None) -> tuple[
        list[Address], list[RouteSpec]]:
    """What belongs on the uplink when ovsnvgre is not there.

    Once the uplink is on the bridge this is what the uplink port row records;
    before that it is what the uplink holds now.
    """
    if uplink_port is not None and SAVED_ADDRESSES_KEY in uplink_port.external_ids:
        return decode_saved(uplink_port.external_ids)
    return _movable(uplink)


def owned_uplinks(desired: HostState, switch: SwitchState) -> list[ActualPort]:
    return [port for port in switch.ports.values()
            if is_owned(port.external_ids, desired.owner)
            and port.external_ids.get(ROLE_KEY) == ROLE_UPLINK]


def links_to_read(desired: HostState, switch: SwitchState) -> list[str]:
    """The links whose addresses and routes the plan needs."""
    names = {desired.tep_port, *(port.name for port in owned_uplinks(desired, switch))}
    if desired.uplink:
        names.add(desired.uplink)
    return sorted(names)


def encode_saved(addresses: list[Address], routes: list[RouteSpec]) -> dict[str, str]:
    return {
        SAVED_ADDRESSES_KEY: json.dumps([str(a) for a in addresses]),
        SAVED_ROUTES_KEY: json.dumps([
            {"dst": str(r.dst), "gateway": str(r.gateway) if r.gateway else None,
             "metric": r.metric, "proto": r.proto} for r in routes]),
    }


def decode_saved(ids: dict[str, str]) -> tuple[list[Address], list[RouteSpec]]:
    try:
        addresses = [ipaddress.ip_interface(a) for a in json.loads(ids[SAVED_ADDRESSES_KEY])]
        routes = [RouteSpec(dst=ipaddress.ip_network(r["dst"]),
                            gateway=ipaddress.ip_address(r["gateway"]) if r["gateway"] else None,
                            metric=int(r["metric"]), proto=int(r.get("proto", 4)))
                  for r in json.loads(ids.get(SAVED_ROUTES_KEY, "[]"))]
    except (ValueError, KeyError, TypeError) as exc:
        raise SystemFailure(f"the uplink port's record of its addresses is damaged ({exc}); "
                            "restore the uplink's addresses by hand") from None
    return addresses, routes


def tep_contents(desired: HostState, saved: tuple[list[Address], list[RouteSpec]]
                 ) -> list[KernelChange]:
    """Everything the tep port should hold, as the changes that would add it."""
    tep = desired.tep_port
    saved_addresses, saved_routes = saved if desired.uplink else ([], [])
    addresses = sorted({desired.pa, *saved_addresses}, key=str)
    routes = list(saved_routes)
    taken = {route.dst for route in routes}
    routes += [route for route in desired.peer_routes if route.dst not in taken]
    return [*(AddressChange("add", tep, a) for a in addresses),
            *(RouteChange("add", tep, r) for r in routes)]


def diff_kernel(desired: HostState, kernel: KernelState,
                saved: tuple[list[Address], list[RouteSpec]]) -> list[KernelChange]:
    """Move what the uplink held onto the tep port, add the PA and the peer routes."""
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
    for route in sorted(have_routes - set(want_routes), key=str):
        changes.append(RouteChange("delete", tep_name, route))
    for address in sorted(have_addresses - want_addresses, key=str):
        changes.append(AddressChange("delete", tep_name, address))
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


def make_plan(desired: HostState, switch: SwitchState, kernel: KernelState,
              removing: bool = False) -> Plan:
    """The changes that make the host match the fabric (or, removing, undo ovsnvgre)."""
    ovsdb_changes, notes = diff_switch(desired, switch, removing)
    kernel_changes: list[KernelChange] = []
    on_tep: list[KernelChange] = []
    if not removing:
        uplink_port = switch.ports.get(desired.uplink) if desired.uplink else None
        saved = saved_underlay(uplink_port, kernel.get(desired.uplink))
        if desired.uplink:
            # The first time the uplink goes on the bridge, record what it held.
            ovsdb_changes = [
                PortCreate(c.spec, {**encode_saved(*saved), **c.extra_ids})
                if isinstance(c, PortCreate) and c.spec.role == ROLE_UPLINK and not c.extra_ids
                else c for c in ovsdb_changes]
            if kernel.get(desired.uplink) is None:
                notes.append(f"uplink {desired.uplink} does not exist on this machine")
        kernel_changes = diff_kernel(desired, kernel, saved)
        on_tep = tep_contents(desired, saved)
    # An uplink that leaves the bridge (down, or a new uplink in the fabric) gets
    # back what it held; this runs after the tep port let go of it.
    for port in owned_uplinks(desired, switch):
        if removing or port.name != desired.uplink:
            kernel_changes += restore_uplink(port, kernel.get(port.name), on_tep)
    return Plan(host=desired.host.name, ovsdb=tuple(ovsdb_changes),
                kernel=tuple(kernel_changes), notes=tuple(notes))


def with_flows(plan: Plan, flows: FlowChanges) -> Plan:
    return replace(plan, flows=flows)
