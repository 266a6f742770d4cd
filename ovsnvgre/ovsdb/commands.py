"""The ovsdbapp commands that carry out a plan's OVSDB changes in one transaction.

Each kind of change has its own handler, registered with ``_add`` by its type, that adds
commands of ovsdbapp's Open_vSwitch API to a ``Batch``, as a chained ovs-vsctl would:
``add_br`` and ``del_br`` for bridges; ``db_create`` of an Interface and of its Port for a
new port (ovsdbapp's ``add_port`` sets no Port column, and the Port carries the owner's
``external_ids``); ``db_set``, ``db_clear`` and ``db_remove`` for rows changed in place;
``db_destroy`` for the rows of a removed port.

Two choices keep a transaction of 11,000 ports linear (ovsdbapp finds a row by name by
scanning its table, and its ``db_remove`` reads a whole set column each time):

- rows changed in place are named by their uuid, looked up once per transaction in the
  IDL (``Batch``), not by name, change after change;
- a bridge's port set changes with one ``db_remove`` and one ``db_add`` per bridge,
  whatever the number of ports.

The transaction itself is ovsdbapp's Open_vSwitch one (``OvsVsctlTransaction``): it
increments ``Open_vSwitch.next_cfg`` and, once committed, waits until ovs-vswitchd has
set ``cur_cfg`` to it (ovs-vswitchd.conf.db(5)), as ovs-vsctl does.
"""

from __future__ import annotations

import threading
from functools import cache, singledispatch
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


def in_place(changes: list[OvsdbChange]) -> set[str]:
    """The names of the Port (and Interface) rows ``changes`` change or delete in place:
    the rows the writing IDL must hold.  New rows are inserted and need none."""
    return {change.spec.name if isinstance(change, PortUpdate) else change.name
            for change in changes if isinstance(change, PortUpdate | PortDelete | PortRecord)}


def root_row(api: Any) -> Any:
    """The one row of the Open_vSwitch table (bridges, cur_cfg, next_cfg) in ``api``'s IDL."""
    return next(iter(api.tables["Open_vSwitch"].rows.values()))


@cache
def _committing() -> type:
    """ovsdbapp's OvsVsctlTransaction with an event set when the commit is in (made on
    first use: a run that writes nothing never imports ovsdbapp)."""
    from ovsdbapp.schema.open_vswitch import impl_idl

    class Committing(impl_idl.OvsVsctlTransaction):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.committed = threading.Event()

        def do_post_commit(self, txn: Any) -> None:
            self.committed.set()
            super().do_post_commit(txn)

    return Committing


def transaction(api: Any) -> Any:
    """An ovsdbapp Open_vSwitch transaction on ``api``'s connection, as ovs-vsctl makes
    one: it increments ``next_cfg``, commits, then waits until ovs-vswitchd has applied
    it, all within the connection's timeout (ovsdbapp's OvsVsctlTransaction).  Its
    ``committed`` event is set once the commit is in and only that wait is left.
    Errors raise (``check_error``) and are not logged by ovsdbapp."""
    return _committing()(api, api.ovsdb_connection, check_error=True, log_errors=False)


class Batch:
    """The ovsdbapp commands of one transaction, as the changes add them.

    Built while holding the connection's lock: it reads the IDL's Port and Interface rows
    (their uuids by name) once, and the handlers read the rows they change in place.
    """

    def __init__(self, api: Any) -> None:
        """``api``: an ovsdbapp Open_vSwitch API (impl_idl.OvsdbIdl) whose IDL holds at
        least the Port and Interface rows the changes touch in place."""
        self.api = api
        self.ports = {row.name: row for row in api.tables["Port"].rows.values()}
        self.bridge_of: dict[Any, str] | None = None  # port uuid -> bridge name, when needed
        self.removed: dict[str, list[Any]] = {}  # bridge name -> uuids of ports leaving it
        self.in_place: list[Any] = []  # commands on rows that exist: sets, clears, destroys
        self.creates: list[Any] = []  # commands that insert rows
        self.added: dict[str, list[Any]] = {}  # bridge name -> db_create commands of Ports

    def port(self, name: str) -> Any:
        """The IDL row of port ``name``; SystemFailure when it is gone."""
        row = self.ports.get(name)
        if row is None:
            raise SystemFailure(f"Port {name} disappeared while ovsnvgre was changing it; "
                                "run again")
        return row

    def bridge_holding(self, port: Any) -> str | None:
        """The name of the bridge whose ``ports`` hold the IDL row ``port``, if any."""
        if self.bridge_of is None:
            self.bridge_of = {member.uuid: bridge.name
                              for bridge in self.api.tables["Bridge"].rows.values()
                              for member in bridge.ports}
        return self.bridge_of.get(port.uuid)

    def set_keys(self, table: str, uuid: Any, keys: dict[str, str],
                 stale: tuple[str, ...] = ()) -> None:
        """external_ids keys set (``db_set`` merges a map) and ``stale`` ones dropped; the
        row's other keys stay, whoever wrote them."""
        if keys:
            self.in_place.append(self.api.db_set(table, uuid, ("external_ids", dict(keys)),
                                                 if_exists=False))
        if stale:
            self.in_place.append(self.api.db_remove(table, uuid, "external_ids", *stale))

    def replace_map(self, table: str, uuid: Any, column: str, value: dict[str, str]) -> None:
        """Map column ``column`` replaced by ``value``: its stale keys go (``db_set`` of a
        map only merges keys into it)."""
        self.in_place.append(self.api.db_clear(table, uuid, column))
        if value:
            self.in_place.append(self.api.db_set(table, uuid, (column, dict(value)),
                                                 if_exists=False))

    def commands(self) -> list[Any]:
        """Every command, each port set changed once per bridge: ports leave their
        bridges, rows change in place or go, new rows are made, ports join bridges."""
        api = self.api
        return [*(api.db_remove("Bridge", bridge, "ports", *uuids)
                  for bridge, uuids in self.removed.items()),
                *self.in_place, *self.creates,
                *(api.db_add("Bridge", bridge, "ports", *ports)
                  for bridge, ports in self.added.items())]


def batch(api: Any, changes: list[OvsdbChange]) -> list[Any]:
    """The ovsdbapp commands of one transaction that makes every change of ``changes``;
    raises SystemFailure when a row it changes in place is gone.  Call it holding
    ``api.ovsdb_connection.lock``: it reads the IDL."""
    commands = Batch(api)
    for change in changes:
        _add(change, commands)
    return commands.commands()


@singledispatch
def _add(change: Any, batch: Batch) -> None:  # pragma: no cover - every kind is below
    raise TypeError(f"no ovsdbapp command for {type(change).__name__}")


@_add.register
def _(change: BridgeCreate, batch: Batch) -> None:
    api, spec = batch.api, change.spec
    ids = dict(spec.external_ids)
    # add_br makes the bridge with its local port and internal interface, as
    # `ovs-vsctl add-br` does; the rest is set on those rows by name.
    batch.creates += [
        api.add_br(spec.name, may_exist=False, datapath_type=spec.datapath_type),
        api.db_set("Bridge", spec.name, ("protocols", list(spec.protocols)),
                   ("fail_mode", [spec.fail_mode] if spec.fail_mode else []),
                   ("external_ids", ids), if_exists=False),
        api.db_set("Port", spec.name, ("external_ids", ids), if_exists=False),
        api.db_set("Interface", spec.name, ("external_ids", ids), if_exists=False)]


@_add.register
def _(change: BridgeUpdate, batch: Batch) -> None:
    if change.columns:
        batch.in_place.append(batch.api.db_set("Bridge", change.name,
                                               *change.columns.items(), if_exists=False))
    batch.set_keys("Bridge", change.name, change.external_ids, change.stale_ids)


@_add.register
def _(change: BridgeDelete, batch: Batch) -> None:
    # Its ports and interfaces go with it (ovsdb-server removes the rows no bridge
    # references any more; del_br deletes those the IDL holds, as ovs-vsctl does).
    batch.in_place.append(batch.api.del_br(change.name, if_exists=False))


@_add.register
def _(change: PortCreate, batch: Batch) -> None:
    api, spec = batch.api, change.spec
    columns: dict[str, Any] = {"name": spec.name, "type": spec.iface_type,
                               "options": dict(spec.options),
                               "external_ids": dict(spec.external_ids)}
    if spec.bfd:
        columns["bfd"] = dict(spec.bfd)
    if spec.mtu_request is not None:
        columns["mtu_request"] = spec.mtu_request
    if spec.mac is not None:
        columns["mac"] = spec.mac
    iface = api.db_create("Interface", **columns)
    # A tuple: ovsdbapp replaces a command in a list by its row in place, and a
    # transaction tried again would then hold the row of the first attempt.
    port = api.db_create("Port", name=spec.name, interfaces=(iface,),
                         external_ids={**spec.external_ids, **change.extra_ids})
    batch.creates += [iface, port]
    batch.added.setdefault(spec.bridge, []).append(port)


@_add.register
def _(change: PortUpdate, batch: Batch) -> None:
    port = batch.port(change.spec.name)
    interfaces = list(port.interfaces)
    iface = interfaces[0].uuid if interfaces else None
    if iface is not None:
        columns: list[tuple[str, Any]] = []
        if change.iface_type is not None:
            columns.append(("type", change.iface_type))
        if change.mtu_request is not None:
            columns.append(("mtu_request", change.mtu_request))
        if change.mac is not None:
            columns.append(("mac", change.mac))
        if columns:
            batch.in_place.append(batch.api.db_set("Interface", iface, *columns,
                                                   if_exists=False))
        if change.options is not None:
            batch.replace_map("Interface", iface, "options", change.options)
        if change.bfd is not None:
            batch.replace_map("Interface", iface, "bfd", change.bfd)
        batch.set_keys("Interface", iface, change.external_ids, change.stale_ids)
    batch.set_keys("Port", port.uuid, change.external_ids, change.stale_ids)


@_add.register
def _(change: PortRecord, batch: Batch) -> None:
    batch.set_keys("Port", batch.port(change.name).uuid, change.ids)


@_add.register
def _(change: PortDelete, batch: Batch) -> None:
    # `ovs-vsctl del-port`: out of its bridge (whichever holds it now), its rows deleted,
    # so that a row no bridge held goes too.
    port = batch.port(change.name)
    bridge = batch.bridge_holding(port)
    if bridge is not None:
        batch.removed.setdefault(bridge, []).append(port.uuid)
    batch.in_place += [batch.api.db_destroy("Interface", iface.uuid)
                       for iface in port.interfaces]
    batch.in_place.append(batch.api.db_destroy("Port", port.uuid))
