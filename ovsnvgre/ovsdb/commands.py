"""The RFC 7047 operations that carry out a plan's OVSDB changes in one transaction.

Each kind of change has its own handler, registered with ``_add`` by its type, that
adds operations to a ``Transaction``.  New rows reference each other by uuid-name;
rows changed in place are named by the ``_uuid`` read just before (``Rows``), so that
ovsdb-server finds each without scanning its table.  A bridge's port set changes in
one mutation per bridge whatever the number of ports (one mutation per port would
copy the whole set each time: quadratic at 11,000 ports).  Ports and interfaces that
no bridge references any more are removed by ovsdb-server itself (they are not root
tables of the Open_vSwitch schema); a removed port's rows are also deleted by name,
as ovs-vsctl does, so that a row no bridge held goes too.

The transaction also increments ``Open_vSwitch.next_cfg`` and reads it back: the
value ovs-vswitchd sets ``cur_cfg`` to once it has applied the change
(ovs-vswitchd.conf.db(5)), which ``wait_for`` waits on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
from ovsnvgre.ovsdb.select import values

# What the operations need of the rows that exist: name -> _uuid, and references.
ROWS_READ = {"Bridge": ["name", "ports"], "Port": ["name", "interfaces"],
             "Interface": ["name"]}


@dataclass
class Rows:
    """The Bridge, Port and Interface rows as read just before the transaction: each
    ``_uuid`` by name, the ports of each bridge and the interfaces of each port."""

    bridges: dict[str, str] = field(default_factory=dict)
    ports: dict[str, str] = field(default_factory=dict)
    bridge_ports: dict[str, set[str]] = field(default_factory=dict)  # bridge uuid -> ports
    port_interfaces: dict[str, list[str]] = field(default_factory=dict)  # port name -> uuids

    @classmethod
    def from_select(cls, rows: dict[str, list[dict[str, Any]]]) -> Rows:
        """From a select of ROWS_READ (or of its Bridge table alone)."""
        found = cls()
        for row in rows.get("Bridge", []):
            uuid = row["_uuid"][1]
            found.bridges[row["name"]] = uuid
            found.bridge_ports[uuid] = set(values(row["ports"]))
        for row in rows.get("Port", []):
            found.ports[row["name"]] = row["_uuid"][1]
            found.port_interfaces[row["name"]] = values(row["interfaces"])
        return found

    def port(self, name: str) -> str:
        """The _uuid of port ``name``; SystemFailure when it is gone."""
        if name not in self.ports:
            raise SystemFailure(f"Port {name} disappeared while ovsnvgre was changing it; "
                                "run again")
        return self.ports[name]

    def bridge(self, name: str) -> str:
        """The _uuid of bridge ``name``; SystemFailure when it is gone."""
        if name not in self.bridges:
            raise SystemFailure(f"Bridge {name} disappeared while ovsnvgre was changing it; "
                                "run again")
        return self.bridges[name]


def needs_ports(changes: list[OvsdbChange]) -> bool:
    """Whether the changes touch existing Port or Interface rows (else a read of the
    Bridge table is all they need)."""
    return any(isinstance(c, PortUpdate | PortDelete | PortRecord) for c in changes)


def _map(pairs: dict[str, str]) -> list[Any]:
    return ["map", [[key, value] for key, value in sorted(pairs.items())]]


def _set(items: list[Any]) -> list[Any]:
    return ["set", items]


def _uuid(uuid: str) -> list[str]:
    return ["uuid", uuid]


class Transaction:
    """The operations of one transaction, as the changes add them."""

    def __init__(self, rows: Rows) -> None:
        self.rows = rows
        self.inserts: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []
        self.deletes: list[dict[str, Any]] = []
        self.new_bridges: dict[str, dict[str, Any]] = {}  # name -> its insert's row
        self.ports_added: dict[str, list[Any]] = {}  # existing bridge uuid -> refs
        self.ports_removed: dict[str, list[Any]] = {}  # bridge uuid -> refs
        self.bridges_added: list[Any] = []
        self.bridges_removed: list[Any] = []
        self.serial = 0

    def named(self, prefix: str) -> str:
        """A fresh uuid-name."""
        self.serial += 1
        return f"{prefix}{self.serial}"

    def insert_port(self, name: str, iface_type: str, options: dict[str, str],
                    port_ids: dict[str, str], iface_ids: dict[str, str],
                    bfd: dict[str, str] | None = None, mtu_request: int | None = None,
                    mac: str | None = None) -> list[str]:
        """A new Port row with its one Interface; returns the Port's reference."""
        iface_name, port_name = self.named("iface"), self.named("port")
        iface: dict[str, Any] = {"name": name, "type": iface_type, "options": _map(options),
                                 "external_ids": _map(iface_ids)}
        if bfd:
            iface["bfd"] = _map(bfd)
        if mtu_request is not None:
            iface["mtu_request"] = mtu_request
        if mac is not None:
            iface["mac"] = mac
        self.inserts.append({"op": "insert", "table": "Interface", "row": iface,
                             "uuid-name": iface_name})
        self.inserts.append({"op": "insert", "table": "Port", "uuid-name": port_name,
                             "row": {"name": name, "interfaces": ["named-uuid", iface_name],
                                     "external_ids": _map(port_ids)}})
        return ["named-uuid", port_name]

    def set_keys(self, table: str, uuid: str, keys: dict[str, str],
                 stale: tuple[str, ...] = ()) -> None:
        """external_ids keys set (replacing their values) and ``stale`` ones dropped;
        the row's other keys stay, whoever wrote them."""
        gone = sorted(set(keys) | set(stale))
        mutations: list[Any] = []
        if gone:
            mutations.append(["external_ids", "delete", _set(gone)])
        if keys:
            mutations.append(["external_ids", "insert", _map(keys)])
        if mutations:
            self.updates.append({"op": "mutate", "table": table,
                                 "where": [["_uuid", "==", _uuid(uuid)]],
                                 "mutations": mutations})

    def add_to_bridge(self, bridge: str, port: list[str]) -> None:
        """``port`` (a reference) joins bridge ``bridge``, new or existing."""
        if bridge in self.new_bridges:
            self.new_bridges[bridge]["ports"][1].append(port)
        else:
            self.ports_added.setdefault(self.rows.bridge(bridge), []).append(port)

    def operations(self) -> list[dict[str, Any]]:
        """Every operation, in an order ovsdb-server accepts: rows inserted, changed,
        port sets and the bridge list mutated, rows deleted, then ``next_cfg``
        incremented and read back (the last result)."""
        bridges = [{"op": "insert", "table": "Bridge", "uuid-name": row.pop("uuid-name"),
                    "row": row} for row in self.new_bridges.values()]
        sets = [{"op": "mutate", "table": "Bridge", "where": [["_uuid", "==", _uuid(uuid)]],
                 "mutations": [["ports", "delete", _set(refs)]]}
                for uuid, refs in self.ports_removed.items()]
        sets += [{"op": "mutate", "table": "Bridge", "where": [["_uuid", "==", _uuid(uuid)]],
                  "mutations": [["ports", "insert", _set(refs)]]}
                 for uuid, refs in self.ports_added.items()]
        root: list[Any] = []
        if self.bridges_removed:
            root.append(["bridges", "delete", _set(self.bridges_removed)])
        if self.bridges_added:
            root.append(["bridges", "insert", _set(self.bridges_added)])
        root.append(["next_cfg", "+=", 1])
        return [{"op": "comment", "comment": "ovsnvgre"}, *self.inserts, *bridges,
                *self.updates, *sets,
                {"op": "mutate", "table": "Open_vSwitch", "where": [], "mutations": root},
                *self.deletes,
                {"op": "select", "table": "Open_vSwitch", "where": [],
                 "columns": ["next_cfg"]}]


def operations(changes: list[OvsdbChange], rows: Rows) -> list[dict[str, Any]]:
    """The operations of one transaction that makes every change of ``changes``;
    raises SystemFailure when a row it changes in place is gone."""
    transaction = Transaction(rows)
    for change in changes:
        _add(change, transaction)
    return transaction.operations()


def wait_for(next_cfg: int, timeout: float) -> list[dict[str, Any]]:
    """The operation that waits, at most ``timeout`` seconds, until ovs-vswitchd has
    applied configuration ``next_cfg`` (no Open_vSwitch row left whose ``cur_cfg`` is
    below it); ovsdb-server answers "timed out" otherwise."""
    return [{"op": "wait", "timeout": int(timeout * 1000), "table": "Open_vSwitch",
             "where": [["cur_cfg", "<", next_cfg]], "columns": ["cur_cfg"], "until": "==",
             "rows": []}]


@singledispatch
def _add(change: Any, transaction: Transaction) -> None:  # pragma: no cover - every kind is below
    raise TypeError(f"no OVSDB operations for {type(change).__name__}")


@_add.register
def _(change: BridgeCreate, transaction: Transaction) -> None:
    spec = change.spec
    local = transaction.insert_port(spec.name, "internal", {}, spec.external_ids,
                                    spec.external_ids)
    name = transaction.named("bridge")
    transaction.new_bridges[spec.name] = {
        "uuid-name": name, "name": spec.name, "ports": _set([local]),
        "datapath_type": spec.datapath_type, "protocols": _set(list(spec.protocols)),
        "fail_mode": _set([spec.fail_mode] if spec.fail_mode else []),
        "external_ids": _map(spec.external_ids)}
    transaction.bridges_added.append(["named-uuid", name])


@_add.register
def _(change: BridgeUpdate, transaction: Transaction) -> None:
    uuid = transaction.rows.bridge(change.name)
    row: dict[str, Any] = {}
    for column, value in change.columns.items():
        row[column] = _set(list(value)) if isinstance(value, list | tuple) else value
    if row:
        transaction.updates.append({"op": "update", "table": "Bridge",
                                    "where": [["_uuid", "==", _uuid(uuid)]], "row": row})
    transaction.set_keys("Bridge", uuid, change.external_ids, change.stale_ids)


@_add.register
def _(change: BridgeDelete, transaction: Transaction) -> None:
    uuid = transaction.rows.bridge(change.name)
    transaction.bridges_removed.append(_uuid(uuid))
    transaction.deletes.append({"op": "delete", "table": "Bridge",
                                "where": [["_uuid", "==", _uuid(uuid)]]})


@_add.register
def _(change: PortCreate, transaction: Transaction) -> None:
    spec = change.spec
    port = transaction.insert_port(spec.name, spec.iface_type, spec.options,
                                   {**spec.external_ids, **change.extra_ids},
                                   spec.external_ids, spec.bfd, spec.mtu_request, spec.mac)
    transaction.add_to_bridge(spec.bridge, port)


@_add.register
def _(change: PortUpdate, transaction: Transaction) -> None:
    name = change.spec.name
    port = transaction.rows.port(name)
    interfaces = transaction.rows.port_interfaces.get(name, [])
    iface = interfaces[0] if interfaces else None
    row: dict[str, Any] = {}
    if change.iface_type is not None:
        row["type"] = change.iface_type
    if change.options is not None:
        row["options"] = _map(change.options)  # replaces the map: stale keys go
    if change.bfd is not None:
        row["bfd"] = _map(change.bfd)
    if change.mtu_request is not None:
        row["mtu_request"] = change.mtu_request
    if change.mac is not None:
        row["mac"] = change.mac
    if iface is not None and row:
        transaction.updates.append({"op": "update", "table": "Interface",
                                    "where": [["_uuid", "==", _uuid(iface)]], "row": row})
    transaction.set_keys("Port", port, change.external_ids, change.stale_ids)
    if iface is not None:
        transaction.set_keys("Interface", iface, change.external_ids, change.stale_ids)


@_add.register
def _(change: PortRecord, transaction: Transaction) -> None:
    transaction.set_keys("Port", transaction.rows.port(change.name), change.ids)


@_add.register
def _(change: PortDelete, transaction: Transaction) -> None:
    rows = transaction.rows
    port = rows.port(change.name)
    for bridge, ports in rows.bridge_ports.items():
        if port in ports:
            transaction.ports_removed.setdefault(bridge, []).append(_uuid(port))
    transaction.deletes.append({"op": "delete", "table": "Port",
                                "where": [["_uuid", "==", _uuid(port)]]})
    transaction.deletes += [{"op": "delete", "table": "Interface",
                             "where": [["_uuid", "==", _uuid(iface)]]}
                            for iface in rows.port_interfaces.get(change.name, [])]
