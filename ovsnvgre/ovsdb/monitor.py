"""Row events of the switch's database, for `ovsnvgre watch`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ovsnvgre.errors import SystemFailure
from ovsnvgre.ovsdb.remote import MONITORED, schema_helper


def watch(remote: str, on_change: Callable[[str], None], timeout: float = 30.0
          ) -> Callable[[], None]:
    """Call ``on_change`` (from another thread) on every change of the rows ovsnvgre reads.

    An ovsdbapp IDL monitors the same tables and columns as a run reads, and
    RowEvents report each create, update and delete (as "Port vnet0 create");
    returns the function that stops it.  Raises SystemFailure when the database
    cannot be monitored.
    """
    from ovsdbapp.backend.ovs_idl import connection, event

    helper = schema_helper(remote)
    handler = event.RowEventHandler()

    class ChangeIdl(connection.OvsdbIdl):  # type: ignore[misc]
        def notify(self, kind: str, row: Any, updates: Any = None) -> None:
            handler.notify(kind, row, updates)

    class Changed(event.RowEvent):  # type: ignore[misc]
        def run(self, kind: str, row: Any, old: Any) -> None:
            name = getattr(row, "name", "")
            on_change(f"{self.table} {name} {kind}".replace("  ", " "))

    kinds = (Changed.ROW_CREATE, Changed.ROW_UPDATE, Changed.ROW_DELETE)
    handler.watch_events([Changed(kinds, table, None) for table in MONITORED])
    conn = connection.Connection(idl=ChangeIdl(remote, helper), timeout=timeout)
    try:
        conn.start()
    except Exception as exc:
        handler.shutdown()
        raise SystemFailure(f"cannot monitor the database at {remote}: {exc}") from exc

    def stop() -> None:
        conn.stop(timeout=5)
        handler.shutdown()

    return stop
