"""ovsdbapp commands for a Plan's OVSDB changes, run inside one shared transaction.

Imported only when a run writes: a converged host never pays for ovsdbapp.
"""

from __future__ import annotations

from typing import Any

from ovsdbapp.backend.ovs_idl import command

from ovsnvgre.errors import SystemFailure
from ovsnvgre.plan import (
    BridgeCreate,
    BridgeDelete,
    BridgeUpdate,
    OvsdbChange,
    PortCreate,
    PortDelete,
    PortUpdate,
)


class ChangeCommand(command.BaseCommand):  # type: ignore[misc]
    """One planned change, run inside the shared transaction."""

    def __init__(self, api: Any, change: OvsdbChange) -> None:
        super().__init__(api)
        self.change = change

    def _find(self, table: str, name: str) -> Any:
        for row in self.api.tables[table].rows.values():
            if row.name == name:
                return row
        raise SystemFailure(f"{table} {name} disappeared while ovsnvgre was changing it; "
                            "run again")

    def _insert_port(self, txn: Any, name: str, iface_type: str, options: dict[str, str],
                     port_ids: dict[str, str], iface_ids: dict[str, str],
                     bfd: dict[str, str] | None = None, mtu_request: int | None = None) -> Any:
        iface = txn.insert(self.api.tables["Interface"])
        iface.name = name
        iface.type = iface_type
        iface.options = options
        iface.external_ids = iface_ids
        if bfd:
            iface.bfd = bfd
        if mtu_request is not None:
            iface.mtu_request = [mtu_request]
        port = txn.insert(self.api.tables["Port"])
        port.name = name
        port.interfaces = [iface]
        port.external_ids = port_ids
        return port

    def run_idl(self, txn: Any) -> None:
        change = self.change
        if isinstance(change, BridgeCreate):
            spec = change.spec
            local = self._insert_port(txn, spec.name, "internal", {}, spec.external_ids,
                                      spec.external_ids)
            bridge = txn.insert(self.api.tables["Bridge"])
            bridge.name = spec.name
            bridge.ports = [local]
            bridge.datapath_type = spec.datapath_type
            bridge.protocols = list(spec.protocols)
            bridge.fail_mode = [spec.fail_mode] if spec.fail_mode else []
            bridge.external_ids = spec.external_ids
            self.api._ovs.addvalue("bridges", bridge)
        elif isinstance(change, BridgeUpdate):
            bridge = self._find("Bridge", change.name)
            for column, value in change.columns.items():
                setattr(bridge, column, value)
            for key, value in change.external_ids.items():
                bridge.setkey("external_ids", key, value)
            for key in change.stale_ids:
                bridge.delkey("external_ids", key)
        elif isinstance(change, BridgeDelete):
            bridge = self._find("Bridge", change.name)
            self.api._ovs.delvalue("bridges", bridge)
            bridge.delete()
        elif isinstance(change, PortCreate):
            spec = change.spec
            port = self._insert_port(txn, spec.name, spec.iface_type, spec.options,
                                     {**spec.external_ids, **change.extra_ids},
                                     spec.external_ids, spec.bfd, spec.mtu_request)
            self._find("Bridge", spec.bridge).addvalue("ports", port)
        elif isinstance(change, PortUpdate):
            port = self._find("Port", change.spec.name)
            iface = port.interfaces[0]
            if change.iface_type is not None:
                iface.type = change.iface_type
            if change.options is not None:
                iface.options = change.options  # replaces the map: stale keys go
            if change.bfd is not None:
                iface.bfd = change.bfd
            if change.mtu_request is not None:
                iface.mtu_request = [change.mtu_request]
            for row in (port, iface):
                for key, value in change.external_ids.items():
                    if row.external_ids.get(key) != value:
                        row.setkey("external_ids", key, value)
                for key in change.stale_ids:
                    if key in row.external_ids:
                        row.delkey("external_ids", key)
        elif isinstance(change, PortDelete):
            port = self._find("Port", change.name)
            for bridge in self.api.tables["Bridge"].rows.values():
                if any(p.uuid == port.uuid for p in bridge.ports):
                    bridge.delvalue("ports", port)
            for iface in port.interfaces:
                iface.delete()
            port.delete()
        else:  # pragma: no cover - the plan has no other kinds
            raise TypeError(change)
