"""diff(desired, actual) -> Plan: the ownership-aware OVSDB diff, the kernel move, the flows.

Pure: no I/O.  A row is ovsnvgre's when its ``ovsnvgre-fabric`` external_id names
this fabric; the diff changes and deletes only such rows, and refuses (with
SystemFailure) a name the fabric wants that something else holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import replace
from typing import Any

from ovsnvgre.actual import ActualBridge, ActualKernel, ActualPort, ActualSwitch
from ovsnvgre.changes import (
    BridgeCreate,
    BridgeDelete,
    BridgeUpdate,
    FlowChanges,
    KernelChange,
    OvsdbChange,
    Plan,
    PortCreate,
    PortDelete,
    PortRecord,
    PortUpdate,
)
from ovsnvgre.desired import (
    OWNER_KEY,
    ROLE_KEY,
    VM_KEY,
    BridgeSpec,
    DesiredHost,
    PortSpec,
    Role,
)
from ovsnvgre.errors import SystemFailure
from ovsnvgre.pipeline import Flow
from ovsnvgre.pipeline.flow import parse_dump_line
from ovsnvgre.preflight import preflight
from ovsnvgre.underlay import (
    SAVED_KEYS,
    diff_kernel,
    encode_saved,
    encode_tep,
    owned_uplinks,
    recorded_tep,
    restore_uplink,
    saved_underlay,
    tep_contents,
    with_tep_mac,
)

# --- ownership -----------------------------------------------------------------------


def is_owned(external_ids: Mapping[str, str], owner: str) -> bool:
    """Whether a row with these external_ids belongs to fabric ``owner``."""
    return external_ids.get(OWNER_KEY) == owner


def _managed(ids: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in ids.items() if k.startswith("ovsnvgre-") and k not in SAVED_KEYS}


def _ids_diff(want: dict[str, str], have: dict[str, str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """Keys to set and stale ovsnvgre keys to remove; foreign keys are never touched."""
    if want == have:  # a row of nothing but its wanted keys: 22,000 at 11,000 ports
        return {}, ()
    have_managed = _managed(have)
    to_set = {k: v for k, v in want.items() if have_managed.get(k) != v}
    stale = tuple(sorted(set(have_managed) - set(want)))
    return to_set, stale


# --- OVSDB diff ----------------------------------------------------------------------


def diff_switch(desired: DesiredHost, actual: ActualSwitch, removing: bool = False) -> tuple[
        list[OvsdbChange], list[str]]:
    """The OVSDB changes that take ``actual`` to ``desired`` (or to nothing, if removing),
    and notes for the user.

    Raises SystemFailure when the fabric asks for a name that something else owns.
    """
    return diff_rows(desired.owner, {} if removing else desired.bridges,
                     {} if removing else desired.ports, actual)


def diff_rows(owner: str, want_bridges: dict[str, BridgeSpec], want_ports: dict[str, PortSpec],
              actual: ActualSwitch) -> tuple[list[OvsdbChange], list[str]]:
    """The OVSDB changes that make ``owner``'s rows exactly ``want_bridges`` and
    ``want_ports``, leaving every other row alone; and notes for the user.

    Raises SystemFailure when a wanted name is held by a row ``owner`` does not own.
    """
    changes: list[OvsdbChange] = []
    for name, spec in want_bridges.items():
        changes += _bridge_changes(owner, spec, actual.bridges.get(name))
    for name, spec in want_ports.items():
        changes += _port_changes(owner, spec, actual.ports.get(name))
    leftovers, notes = _leftovers(owner, want_bridges, want_ports, actual)
    return changes + leftovers, notes


def _bridge_changes(owner: str, spec: BridgeSpec, have: ActualBridge | None
                    ) -> list[OvsdbChange]:
    if have is None:
        return [BridgeCreate(spec)]
    if not is_owned(have.external_ids, owner):
        raise SystemFailure(_foreign("bridge", spec.name, have.external_ids, owner))
    columns: dict[str, Any] = {}
    if have.datapath_type != spec.datapath_type:
        columns["datapath_type"] = spec.datapath_type
    if tuple(sorted(have.protocols)) != tuple(sorted(spec.protocols)):
        columns["protocols"] = list(spec.protocols)
    if have.fail_mode != spec.fail_mode:
        columns["fail_mode"] = [spec.fail_mode] if spec.fail_mode else []
    to_set, stale = _ids_diff(spec.external_ids, have.external_ids)
    if columns or to_set or stale:
        return [BridgeUpdate(spec.name, columns, to_set, stale)]
    return []


def _port_changes(owner: str, spec: PortSpec, have: ActualPort | None) -> list[OvsdbChange]:
    if have is None:
        return [PortCreate(spec)]
    if not is_owned(have.external_ids, owner):
        if spec.adopt_existing and have.bridge == spec.bridge:
            return []  # the hypervisor's port, already where the fabric wants it
        where = f"on bridge {have.bridge}" if have.bridge else "in the database"
        raise SystemFailure(f"port {spec.name} already exists {where} and was not created by "
                            f"ovsnvgre (fabric {owner!r}); "
                            f"{_foreign_hint(have.external_ids, owner)}")
    if have.bridge != spec.bridge:
        return [PortDelete(spec.name, have.bridge, spec.role),
                PortCreate(spec, _saved_ids(have))]
    update = _port_update(spec, have)
    return [update] if update is not None else []


def _leftovers(owner: str, want_bridges: dict[str, BridgeSpec], want_ports: dict[str, PortSpec],
               actual: ActualSwitch) -> tuple[list[OvsdbChange], list[str]]:
    """Deletions of the owned rows the fabric no longer wants (a bridge that still holds
    ports ovsnvgre did not create is kept, with a note)."""
    changes: list[OvsdbChange] = []
    notes: list[str] = []
    owned_bridges = {name for name, br in actual.bridges.items()
                     if is_owned(br.external_ids, owner)}
    for name, have in sorted(actual.ports.items()):
        if name in want_ports or name in actual.bridges or not is_owned(have.external_ids, owner):
            continue
        if have.bridge in owned_bridges and have.bridge not in want_bridges:
            continue  # goes with its bridge
        changes.append(PortDelete(name, have.bridge, have.external_ids.get(ROLE_KEY, "owned")))
    for name in sorted(owned_bridges - set(want_bridges)):
        members = [port for port in actual.bridges[name].ports if port != name]
        foreign = [port for port in members
                   if not is_owned(actual.ports[port].external_ids, owner)]
        if not foreign:
            changes.append(BridgeDelete(name))
            continue
        # Deleting the bridge would delete ports that are not ours.
        changes += [PortDelete(port, name, actual.ports[port].external_ids.get(ROLE_KEY, "owned"))
                    for port in members if port not in foreign]
        notes.append(f"kept bridge {name}: it holds ports ovsnvgre did not create "
                     f"({', '.join(sorted(foreign))})")
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
    mac = None
    if spec.mac is not None and have.mac != spec.mac:
        mac = spec.mac
        reasons.append(f"mac {have.mac or 'unset'} -> {spec.mac}")
    to_set, stale = _ids_diff(spec.external_ids, have.external_ids)
    iface_set, iface_stale = _ids_diff(spec.external_ids, have.iface_external_ids)
    if to_set or stale or iface_set or iface_stale:
        reasons.append("external_ids")
    if not reasons:
        return None
    return PortUpdate(spec, iface_type, options, spec.external_ids,
                      tuple(sorted(set(stale) | set(iface_stale))), "; ".join(reasons),
                      bfd, mtu_request, mac)


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


# --- VM ports whose device was re-created ----------------------------------------------

USERSPACE = "netdev"
SYSTEM_TYPES = ("", "system")


def handle_candidates(desired: DesiredHost, actual: ActualSwitch) -> set[str]:
    """The fabric's VM ports (owned or adopted) that ovs-vswitchd has open as system
    devices on a userspace (netdev) bridge: those whose device it can hold a stale
    handle on (handles.check), a packet socket of the userspace datapath.  (The kernel
    datapath holds no such socket; it was not measured: no openvswitch module here.)"""
    live = actual.interfaces.live()
    names = set()
    for name, spec in desired.ports.items():
        have = actual.ports.get(name)
        if spec.role != Role.VM or have is None or have.bridge is None or name not in live:
            continue
        bridge = actual.bridges.get(have.bridge)
        if bridge is not None and bridge.datapath_type == USERSPACE \
                and have.iface_type in SYSTEM_TYPES:
            names.add(name)
    return names


def stale_text(name: str, index: int) -> str:
    """Why VM port ``name`` is dead: its device now has interface index ``index``."""
    return (f"its device {name} was deleted and re-created (now ifindex {index}) and "
            "ovs-vswitchd still holds the deleted one: no traffic passes")


def reattach(desired: DesiredHost, actual: ActualSwitch, kernel: ActualKernel,
             changes: list[OvsdbChange]) -> tuple[list[OvsdbChange], list[str]]:
    """``changes`` with each owned stale VM port (``kernel.stale``) removed and added
    again (``attach_again``), and a note for each stale VM port ovsnvgre did not create
    (left alone)."""
    why, notes = {}, []
    for name, index in sorted(kernel.stale.items()):
        spec, have = desired.ports.get(name), actual.ports.get(name)
        if spec is None or have is None:
            continue
        if is_owned(have.external_ids, desired.owner):
            why[name] = stale_text(name, index)
            continue
        vm = spec.external_ids.get(VM_KEY, "?")
        notes.append(f"VM port {name} ({vm}) is dead: {stale_text(name, index)}; "
                     "ovsnvgre did not create this Port row and does not re-create it: "
                     f"its owner must attach it again (`ovs-vsctl del-port {have.bridge} "
                     f"{name}`, then add it as the hypervisor does)")
    return attach_again(desired, actual, changes, why), notes


def attach_again(desired: DesiredHost, actual: ActualSwitch, changes: list[OvsdbChange],
                 why: dict[str, str]) -> list[OvsdbChange]:
    """``changes`` with each port of ``why`` (name -> the reason) removed and, in a second
    transaction (the removal's ``reattach``), added again: ovs-vswitchd re-opens a device
    only when a transaction no longer has its port.  A port another change removes or
    creates is left to it, as is one not in the fabric or not on the switch."""
    touched = {c.name for c in changes if isinstance(c, PortDelete)}
    touched |= {c.spec.name for c in changes if isinstance(c, PortCreate)}
    for name, reason in why.items():
        spec, have = desired.ports.get(name), actual.ports.get(name)
        if spec is None or have is None or name in touched:
            continue
        changes = [c for c in changes if not (isinstance(c, PortUpdate) and c.spec.name == name)]
        changes.append(PortDelete(name, have.bridge, spec.role, reattach=reason))
        changes.append(PortCreate(spec, _saved_ids(have)))
    return changes


# --- flows ---------------------------------------------------------------------------


def diff_flows(bridge: str, desired: set[Flow], installed: set[Flow]) -> FlowChanges:
    """The flow-mods from ``installed`` to ``desired`` on ``bridge``.

    A flow whose match is installed with other actions is re-added (which replaces it).
    """
    if desired == installed:  # a converged bridge: one set comparison, no keyed copies
        return FlowChanges(bridge)
    want = {flow.key: flow for flow in desired}
    have = {flow.key: flow for flow in installed}
    add = tuple(flow for key, flow in want.items() if have.get(key) != flow)
    delete = tuple(flow for key, flow in have.items() if key not in want)
    return FlowChanges(bridge, add, delete)


def diff_dump(bridge: str, desired: Mapping[str, Flow], dumped: AbstractSet[str]
              ) -> FlowChanges:
    """The flow-mods from the flows ``dumped`` on ``bridge`` (the lines of `dump-flows`,
    openflow.FlowDump) to ``desired`` (each flow by its ``dump_line``).

    A converged bridge is one comparison of two sets of text.  Only the lines that
    differ are parsed and compared as values (diff_flows), so a flow whose text
    reads otherwise than OVS prints it still compares exactly, only slower.
    """
    if desired.keys() == dumped:
        return FlowChanges(bridge)
    if not dumped:  # a new bridge: every flow is added, none compared
        return FlowChanges(bridge, tuple(desired.values()), ())
    extra = {parse_dump_line(line) for line in dumped if line not in desired}
    missing = {flow for line, flow in desired.items() if line not in dumped}
    return diff_flows(bridge, missing, extra - {None})


def by_dump_line(flows: Iterable[Flow]) -> dict[str, Flow]:
    """``flows`` by the line `dump-flows` prints for each (Flow.dump_line)."""
    return {flow.dump_line: flow for flow in flows}


# --- the whole host ------------------------------------------------------------------


def make_plan(desired: DesiredHost, switch: ActualSwitch, kernel: ActualKernel,
              removing: bool = False, prior: dict[str, ActualPort] | None = None) -> Plan:
    """The OVSDB and kernel changes that make the host match the fabric (or, removing,
    undo ovsnvgre); the flows are added later by with_flows, once the ports exist.

    ``prior``: the owned ports a run that died started from (see owned_uplinks).
    What would make `up` refuse before any change is in the plan's ``blockers``
    (preflight.py).  Raises SystemFailure for a foreign row in the way or a damaged
    uplink record.
    """
    blockers: list[str] = []
    if not removing:
        blockers, warnings = preflight(desired, switch, kernel)
        if blockers:
            return Plan(host=desired.host.name, notes=tuple(warnings),
                        blockers=tuple(blockers))
        desired = with_tep_mac(desired, kernel)
    ovsdb_changes, notes = diff_switch(desired, switch, removing)
    if not removing:
        notes = [*warnings, *notes]
    if not removing and kernel.stale:
        ovsdb_changes, stale_notes = reattach(desired, switch, kernel, ovsdb_changes)
        notes += stale_notes
    kernel_changes: list[KernelChange] = []
    on_tep: list[KernelChange] = []
    if not removing:
        uplinks = {port.name: port for port in owned_uplinks(desired, switch, prior)}
        uplink_port = uplinks.get(desired.uplink or "") or switch.ports.get(desired.uplink or "")
        saved = saved_underlay(uplink_port, kernel.get(desired.uplink))
        if desired.uplink:
            # The first time the uplink goes on the bridge, record what it held.
            ovsdb_changes = [
                PortCreate(c.spec, {**encode_saved(*saved), **c.extra_ids})
                if isinstance(c, PortCreate) and c.spec.role == Role.UPLINK and not c.extra_ids
                else c for c in ovsdb_changes]
        tep_port = switch.ports.get(desired.tep_port)
        kernel_changes = diff_kernel(desired, kernel, saved, recorded_tep(tep_port))
        on_tep = tep_contents(desired, saved)
        ovsdb_changes = _record_tep(desired, ovsdb_changes, tep_port, encode_tep(on_tep))
    # An uplink that leaves the bridge (down, or a new uplink in the fabric) gets
    # back what it held; this runs after the tep port let go of it.
    for port in owned_uplinks(desired, switch, prior):
        if removing or port.name != desired.uplink:
            kernel_changes += restore_uplink(port, kernel.get(port.name), on_tep)
    return Plan(host=desired.host.name, ovsdb=tuple(ovsdb_changes),
                kernel=tuple(kernel_changes), notes=tuple(notes))


def _record_tep(desired: DesiredHost, changes: list[OvsdbChange], port: ActualPort | None,
                record: dict[str, str]) -> list[OvsdbChange]:
    """The OVSDB changes with the tep port's record of what it holds brought up to date."""
    created = [c for c in changes if isinstance(c, PortCreate) and c.spec.role == Role.TEP]
    if created:
        return [PortCreate(c.spec, {**c.extra_ids, **record}) if c in created else c
                for c in changes]
    if port is None or all(port.external_ids.get(k) == v for k, v in record.items()):
        return changes
    return [*changes, PortRecord(port.name, record)]


def with_flows(plan: Plan, flows: FlowChanges) -> Plan:
    """``plan`` with its flow changes."""
    return replace(plan, flows=flows)
