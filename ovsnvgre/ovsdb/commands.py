"""The ovsdbapp command that carries out one planned OVSDB change inside a transaction.

A command follows ovsdbapp's Command interface (``run_idl(txn)``, ``post_commit``,
``result``) without subclassing its BaseCommand, so that a converged run, which
writes nothing, never imports ovsdbapp (~0.13 s).  Each kind of change has its
own handler, registered with ``_run`` by its type.
"""

from __future__ import annotations

from functools import singledispatch
from typing import Any

from ovsnvgre.changes import (
    BridgeCreate,
    BridgeDelete,
    BridgeUpdate,
    OvsdbChange,
    PortCreate,
    PortDelete,
    PortRecord,
    PortUpdate,
)
from ovsnvgre.errors import SystemFailure


def root_row(api: Any) -> Any:
    """The one row of the Open_vSwitch table (bridges, cur_cfg, next_cfg)."""
    return next(iter(api.tables["Open_vSwitch"].rows.values()))


class ChangeCommand:
    """One planned change, run inside the shared transaction."""

    READ_ONLY = False

    def __init__(self, api: Any, change: OvsdbChange) -> None:
        self.api = api
        self.change = change
        self.result: Any = None

    def run_idl(self, txn: Any) -> None:
        """Called by ovsdbapp's transaction to add this change to it."""
        _run(self.change, self.api, txn)

    def post_commit(self, txn: Any) -> None:
        """Nothing to do once committed."""

    def __str__(self) -> str:
        return f"ChangeCommand({self.change.describe()})"


def _find(api: Any, table: str, name: str) -> Any:
    for row in api.tables[table].rows.values():
        if row.name == name:
            return row
    raise SystemFailure(f"{table} {name} disappeared while ovsnvgre was changing it; "
                        "run again")


def _insert_port(api: Any, txn: Any, name: str, iface_type: str, options: dict[str, str],
                 port_ids: dict[str, str], iface_ids: dict[str, str],
                 bfd: dict[str, str] | None = None, mtu_request: int | None = None,
                 mac: str | None = None) -> Any:
    iface = txn.insert(api.tables["Interface"])
    iface.name = name
    iface.type = iface_type
    iface.options = options
    iface.external_ids = iface_ids
    if bfd:
        iface.bfd = bfd
    if mtu_request is not None:
        iface.mtu_request = [mtu_request]
    if mac is not None:
        iface.mac = [mac]
    port = txn.insert(api.tables["Port"])
    port.name = name
    port.interfaces = [iface]
    port.external_ids = port_ids
    return port


@singledispatch
def _run(change: Any, api: Any, txn: Any) -> None:  # pragma: no cover - every kind is below
    raise TypeError(f"no OVSDB handler for {type(change).__name__}")


@_run.register
def _(change: BridgeCreate, api: Any, txn: Any) -> None:
    spec = change.spec
    local = _insert_port(api, txn, spec.name, "internal", {}, spec.external_ids,
                         spec.external_ids)
    bridge = txn.insert(api.tables["Bridge"])
    bridge.name = spec.name
    bridge.ports = [local]
    bridge.datapath_type = spec.datapath_type
    bridge.protocols = list(spec.protocols)
    bridge.fail_mode = [spec.fail_mode] if spec.fail_mode else []
    bridge.external_ids = spec.external_ids
    root_row(api).addvalue("bridges", bridge)


@_run.register
def _(change: BridgeUpdate, api: Any, txn: Any) -> None:
    bridge = _find(api, "Bridge", change.name)
    for column, value in change.columns.items():
        setattr(bridge, column, value)
    for key, value in change.external_ids.items():
        bridge.setkey("external_ids", key, value)
    for key in change.stale_ids:
        bridge.delkey("external_ids", key)


@_run.register
def _(change: BridgeDelete, api: Any, txn: Any) -> None:
    bridge = _find(api, "Bridge", change.name)
    root_row(api).delvalue("bridges", bridge)
    bridge.delete()


@_run.register
def _(change: PortCreate, api: Any, txn: Any) -> None:
    spec = change.spec
    port = _insert_port(api, txn, spec.name, spec.iface_type, spec.options,
                        {**spec.external_ids, **change.extra_ids}, spec.external_ids,
                        spec.bfd, spec.mtu_request, spec.mac)
    _find(api, "Bridge", spec.bridge).addvalue("ports", port)


@_run.register
def _(change: PortUpdate, api: Any, txn: Any) -> None:  # noqa: C901 - one decision per branch, each documented; splitting would scatter it
    port = _find(api, "Port", change.spec.name)
    iface = port.interfaces[0]
    if change.iface_type is not None:
        iface.type = change.iface_type
    if change.options is not None:
        iface.options = change.options  # replaces the map: stale keys go
    if change.bfd is not None:
        iface.bfd = change.bfd
    if change.mtu_request is not None:
        iface.mtu_request = [change.mtu_request]
    if change.mac is not None:
        iface.mac = [change.mac]
    for row in (port, iface):
        for key, value in change.external_ids.items():
            if row.external_ids.get(key) != value:
                row.setkey("external_ids", key, value)
        for key in change.stale_ids:
            if key in row.external_ids:
                row.delkey("external_ids", key)


@_run.register
def _(change: PortRecord, api: Any, txn: Any) -> None:
    port = _find(api, "Port", change.name)
    for key, value in change.ids.items():
        port.setkey("external_ids", key, value)


@_run.register
def _(change: PortDelete, api: Any, txn: Any) -> None:
    port = _find(api, "Port", change.name)
    for bridge in api.tables["Bridge"].rows.values():
        if any(p.uuid == port.uuid for p in bridge.ports):
            bridge.delvalue("ports", port)
    for iface in port.interfaces:
        iface.delete()
    port.delete()
