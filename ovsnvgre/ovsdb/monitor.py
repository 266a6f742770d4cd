"""Row events of the switch's database for `ovsnvgre watch`, and its transactions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ovsnvgre.errors import SystemFailure
from ovsnvgre.ovsdb.remote import MONITORED, schema_helper


class Monitor:
    """An ovsdbapp IDL that monitors every row ovsnvgre reads (remote.MONITORED).

    It reports each create, update and delete to ``on_change`` (from its own thread, as
    "Port vnet0 create") and carries watch's transactions (``api``: no second
    connection, and every row is there to change in place).  ``stop`` ends it.  Raises
    SystemFailure when the database cannot be monitored.
    """

    def __init__(self, remote: str, on_change: Callable[[str], None], timeout: float = 30.0
                 ) -> None:
        from ovsdbapp.backend.ovs_idl import connection, event

        helper = schema_helper(remote)
        self.handler = handler = event.RowEventHandler()

        monitor = self
        self.synced = False

        class ChangeIdl(connection.OvsdbIdl):  # type: ignore[misc]
            def notify(self, kind: str, row: Any, updates: Any = None) -> None:
                # The rows of the first snapshot are no change: the run that follows the
                # start reads them (a reconnection's snapshot is reported: a full run).
                if monitor.synced:
                    handler.notify(kind, row, updates)

        class Changed(event.RowEvent):  # type: ignore[misc]
            def matches(self, kind: str, row: Any, old: Any = None) -> bool:
                # RowEvent.matches formats both rows for a debug line whatever the log
                # level: a bridge of 11,000 ports, twice, on every port added.
                return kind in self.events and row._table.name == self.table

            def run(self, kind: str, row: Any, old: Any) -> None:
                name = getattr(row, "name", "")
                on_change(f"{self.table} {name} {kind}".replace("  ", " "))

        kinds = (Changed.ROW_CREATE, Changed.ROW_UPDATE, Changed.ROW_DELETE)
        handler.watch_events([Changed(kinds, table, None) for table in MONITORED])
        self.conn = connection.Connection(idl=ChangeIdl(remote, helper), timeout=timeout)
        self._api: Any = None
        try:
            self.conn.start()  # returns once the first snapshot is in
        except Exception as exc:
            handler.shutdown()
            raise SystemFailure(f"cannot monitor the database at {remote}: {exc}") from exc
        with self.conn.lock:
            self.synced = True

    def api(self) -> Any:
        """An ovsdbapp Open_vSwitch API whose transactions go through this connection."""
        if self._api is None:
            from ovsdbapp.schema.open_vswitch import impl_idl

            # A class of its own: ovsdbapp keeps one connection per API class.
            api_class = type("MonitorApi", (impl_idl.OvsdbIdl,), {"_ovsdb_connection": None})
            self._api = api_class(self.conn, auto_index=False)
        return self._api

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
