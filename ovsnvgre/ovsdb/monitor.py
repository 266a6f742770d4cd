"""Row events of the switch's database, and its rows as this connection holds them, for
`ovsnvgre watch`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ovsnvgre.actual import ActualBridge, ActualPort, PortStatus
from ovsnvgre.errors import SystemFailure
from ovsnvgre.ovsdb.remote import MONITORED, schema_helper


def _one(value: Any) -> Any:
    """An optional IDL column ([] or [value]) as its value or None."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


class Monitor:
    """An ovsdbapp IDL that monitors every row ovsnvgre reads (remote.MONITORED).

    It reports each create, update and delete to ``on_change`` (from its own thread, as
    "Port vnet0 create"), gives the rows it holds as ActualPort values (``ports``), and
    carries transactions (``api``: no second connection, and every row is there to
    change in place).  ``stop`` ends it.  Raises SystemFailure when the database cannot
    be monitored.
    """

    def __init__(self, remote: str, on_change: Callable[[str], None], timeout: float = 30.0
                 ) -> None:
        from ovsdbapp.backend.ovs_idl import connection, event

        helper = schema_helper(remote)
        self.handler = handler = event.RowEventHandler()

        class ChangeIdl(connection.OvsdbIdl):  # type: ignore[misc]
            def notify(self, kind: str, row: Any, updates: Any = None) -> None:
                handler.notify(kind, row, updates)

        class Changed(event.RowEvent):  # type: ignore[misc]
            def run(self, kind: str, row: Any, old: Any) -> None:
                name = getattr(row, "name", "")
                on_change(f"{self.table} {name} {kind}".replace("  ", " "))

        kinds = (Changed.ROW_CREATE, Changed.ROW_UPDATE, Changed.ROW_DELETE)
        handler.watch_events([Changed(kinds, table, None) for table in MONITORED])
        self.conn = connection.Connection(idl=ChangeIdl(remote, helper), timeout=timeout)
        self._api: Any = None
        try:
            self.conn.start()
        except Exception as exc:
            handler.shutdown()
            raise SystemFailure(f"cannot monitor the database at {remote}: {exc}") from exc

    def api(self) -> Any:
        """An ovsdbapp Open_vSwitch API whose transactions go through this connection."""
        if self._api is None:
            from ovsdbapp.schema.open_vswitch import impl_idl

            # A class of its own: ovsdbapp keeps one connection per API class.
            api_class = type("MonitorApi", (impl_idl.OvsdbIdl,), {"_ovsdb_connection": None})
            self._api = api_class(self.conn, auto_index=False)
        return self._api

    def ports(self, names: Iterable[str]) -> tuple[dict[str, ActualPort], PortStatus]:
        """The Port rows called ``names`` (with their first Interface) and each named
        interface's OpenFlow number and error, as held now; absent names are left out."""
        wanted = set(names)
        found: dict[str, ActualPort] = {}
        status = PortStatus()
        with self.conn.lock:
            tables = self.conn.idl.tables
            bridge_of = {port.uuid: bridge.name for bridge in tables["Bridge"].rows.values()
                         for port in bridge.ports}
            for iface in tables["Interface"].rows.values():
                if iface.name in wanted:
                    status[iface.name] = (_one(iface.ofport), _one(iface.error))
            for port in tables["Port"].rows.values():
                if port.name not in wanted:
                    continue
                ifaces = list(port.interfaces)
                iface = ifaces[0] if ifaces else None
                found[port.name] = ActualPort(
                    name=port.name, bridge=bridge_of.get(port.uuid),
                    iface_type=iface.type if iface else "",
                    options=dict(iface.options) if iface else {},
                    external_ids=dict(port.external_ids),
                    iface_external_ids=dict(iface.external_ids) if iface else {},
                    interfaces=len(ifaces), bfd=dict(iface.bfd) if iface else {},
                    mtu_request=_one(iface.mtu_request) if iface else None,
                    mac=_one(iface.mac) if iface else None)
        return found, status

    def bridges(self) -> dict[str, ActualBridge]:
        """Every Bridge row as held now, by name."""
        with self.conn.lock:
            return {row.name: ActualBridge(
                name=row.name, datapath_type=row.datapath_type,
                protocols=tuple(sorted(row.protocols)), fail_mode=_one(row.fail_mode),
                external_ids=dict(row.external_ids),
                ports=tuple(sorted(port.name for port in row.ports)))
                for row in self.conn.idl.tables["Bridge"].rows.values()}

    def stop(self) -> None:
        """Close the connection and stop reporting."""
        self.conn.stop(timeout=5)
        self.handler.shutdown()


def watch(remote: str, on_change: Callable[[str], None], timeout: float = 30.0
          ) -> Callable[[], None]:
    """Call ``on_change`` (from another thread) on every change of the rows ovsnvgre reads,
    as "Port vnet0 create"; returns the function that stops it.  Raises SystemFailure
    when the database cannot be monitored."""
    return Monitor(remote, on_change, timeout).stop
