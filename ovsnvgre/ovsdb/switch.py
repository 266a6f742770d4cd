"""One switch's database: read it (plain selects), apply a plan's OVSDB part (one ovsdbapp
transaction, ovsdb/commands.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ovsnvgre.actual import ActualBridge, ActualPort, ActualSwitch, PortStatus
from ovsnvgre.changes import OvsdbChange, PortCreate, PortDelete
from ovsnvgre.errors import SystemFailure
from ovsnvgre.ovsdb import commands
from ovsnvgre.ovsdb.remote import (
    CONNECT_TIMEOUT,
    MONITORED,
    absolute,
    check_remote,
    default_remote,
    schema_helper,
)
from ovsnvgre.ovsdb.select import RawClient, as_map, interface_status, values

log = logging.getLogger(__name__)

# What read() compares: the monitored columns but those only watch's row events use
# (an Interface's link_state and ifindex): 11,000 interfaces make a large reply.
READ = {"Bridge": MONITORED["Bridge"], "Port": MONITORED["Port"],
        "Interface": [c for c in MONITORED["Interface"] if c not in ("link_state", "ifindex")]}


class NotApplied(SystemFailure):
    """ovs-vswitchd did not apply a transaction in time: the database holds it, and any
    further transaction (a restore) would wait just as long."""


class Switch:
    """One switch's database, used as a context manager.

    Reads are plain selects; writes go through ovsdbapp, whose connection is opened
    only when there is something to write (a converged run never imports it).
    """

    def __init__(self, remote: str | None = None, timeout: float = 30.0, api: Any = None
                 ) -> None:
        """``remote``: unix:PATH or tcp:HOST:PORT (default: default_remote());
        ``timeout``: seconds a write may take, ovs-vswitchd applying it included
        (--timeout); ``api``: an ovsdbapp API whose IDL holds every row (watch's
        monitor.Monitor) to write through, instead of a connection of this Switch's own."""
        self.remote = absolute(remote or default_remote())
        check_remote(self.remote)
        self.timeout = timeout
        self.api: Any = api
        self.shared = api is not None
        self.watched: set[str] = set()  # the Port and Interface rows our own IDL holds
        self.raw: RawClient | None = None

    def __enter__(self) -> Switch:
        self.raw = RawClient(self.remote, CONNECT_TIMEOUT)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.api is not None and not self.shared:
            self.api.ovsdb_connection.stop(timeout=5)
        if self.raw is not None:
            self.raw.close()

    # --- reading ----------------------------------------------------------------

    def _select(self, tables: dict[str, list[str]], named: dict[str, set[str]] | None = None
                ) -> dict[str, list[dict[str, Any]]]:
        return self._raw().select(tables, named)

    def read(self, names: Iterable[str] | None = None) -> ActualSwitch:
        """Every bridge, port and interface status, in one select; with ``names``, every
        bridge but only the ports and interfaces called so (watch's incremental runs).
        Raises SystemFailure."""
        rows = self._select(READ, None if names is None else {"Port": set(names),
                                                              "Interface": set(names)})
        ifaces = {row["_uuid"][1]: row for row in rows["Interface"]}
        ports_by_uuid = {row["_uuid"][1]: row for row in rows["Port"]}
        bridge_of: dict[str, str] = {}
        bridges: dict[str, ActualBridge] = {}
        for row in rows["Bridge"]:
            members = values(row["ports"])
            for uuid in members:
                bridge_of[uuid] = row["name"]
            fail_mode = values(row["fail_mode"])
            bridges[row["name"]] = ActualBridge(
                name=row["name"], datapath_type=row["datapath_type"],
                protocols=tuple(sorted(values(row["protocols"]))),
                fail_mode=fail_mode[0] if fail_mode else None,
                external_ids=as_map(row["external_ids"]),
                ports=tuple(sorted(ports_by_uuid[u]["name"] for u in members
                                   if u in ports_by_uuid)))
        ports: dict[str, ActualPort] = {}
        port_of: dict[str, str] = {}
        for uuid, row in ports_by_uuid.items():
            members = [ifaces[u] for u in values(row["interfaces"]) if u in ifaces]
            port_of.update({member["name"]: row["name"] for member in members})
            iface = members[0] if members else None
            ports[row["name"]] = ActualPort(
                name=row["name"], bridge=bridge_of.get(uuid),
                iface_type=iface["type"] if iface else "",
                options=as_map(iface["options"]) if iface else {},
                external_ids=as_map(row["external_ids"]),
                iface_external_ids=as_map(iface["external_ids"]) if iface else {},
                interfaces=len(members),
                bfd=as_map(iface["bfd"]) if iface else {},
                mtu_request=next(iter(values(iface["mtu_request"])), None) if iface else None,
                mac=next(iter(values(iface["mac"])), None) if iface else None)
        return ActualSwitch(bridges=bridges, ports=ports,
                           interfaces=interface_status(rows["Interface"]),
                           port_of_interface=port_of)

    def bridge_external_ids(self) -> dict[str, dict[str, str]]:
        """Each bridge's external_ids, by name: all it takes to tell whose a bridge is."""
        rows = self._select({"Bridge": ["name", "external_ids"]})["Bridge"]
        return {row["name"]: as_map(row["external_ids"]) for row in rows}

    def port_status(self, names: Iterable[str], wait: float = 0.0) -> PortStatus:
        """The OpenFlow port number and error of each interface among ``names``.

        ovs-vswitchd reports the number (or an error) right after it applies a
        transaction; ``wait`` gives it that moment for ports that show neither yet.
        """
        wanted = set(names)
        deadline = time.monotonic() + wait
        # A few names are selected by name (watch's runs); many, with one select of all.
        named = {"Interface": wanted} if len(wanted) <= 64 else None
        while True:
            rows = self._select({"Interface": ["name", "ofport", "error"]}, named)["Interface"]
            status = interface_status(rows).only(wanted)
            pending = [n for n, (ofport, error) in status.items()
                       if ofport is None and error is None]
            if not pending or time.monotonic() >= deadline:
                return status
            time.sleep(0.005 if named else 0.05)  # a select by name is cheap

    def interface_details(self, names: Iterable[str]) -> dict[str, dict[str, Any]]:
        """What `status` shows of each interface among ``names``, as plain values."""
        wanted = set(names)
        columns = ["name", "ofport", "error", "link_state", "mtu", "statistics", "bfd_status"]
        rows = self._select({"Interface": columns})["Interface"]
        details = {}
        for row in rows:
            if row["name"] not in wanted:
                continue
            details[row["name"]] = {
                "ofport": next(iter(values(row["ofport"])), None),
                "error": next(iter(values(row["error"])), None),
                "link_state": next(iter(values(row["link_state"])), None),
                "mtu": next(iter(values(row["mtu"])), None),
                "statistics": {k: int(v) for k, v in as_map(row["statistics"]).items()},
                "bfd_status": as_map(row["bfd_status"]),
            }
        return details

    # --- writing ----------------------------------------------------------------

    def _connect_api(self, port_names: set[str]) -> Any:
        """The ovsdbapp API, its IDL holding every Bridge row but only the Port and
        Interface rows named (watch's shared API holds them all already).

        A transaction only needs to see the rows it changes in place: new rows are
        inserted, and a bridge's port set is changed by mutation.  Monitoring 11,000
        ports to add one would cost seconds of the `ovs` package's pure-Python JSON.
        A second transaction (a rollback) that changes other rows in place connects
        again with those.
        """
        if self.api is not None and (self.shared or port_names <= self.watched):
            return self.api
        if self.api is not None:
            self.api.ovsdb_connection.stop(timeout=5)
            self.api = None
        from ovsdbapp.backend.ovs_idl import connection
        from ovsdbapp.schema.open_vswitch import impl_idl

        idl = connection.OvsdbIdl(self.remote, schema_helper(self.remote))
        wanted = [["name", "==", name] for name in sorted(port_names)] or [False]
        for table in ("Port", "Interface"):
            idl.cond_change(table, wanted)
        conn = connection.Connection(idl=idl, timeout=self.timeout)
        # ovsdbapp keeps the connection on the API class, one per process; a class of
        # our own per Switch lets one process drive several switches.  No name
        # indexes: the commands name rows changed in place by uuid (commands.Batch),
        # and keeping indexes sorted cost ~35 ms of a 1,000-port transaction.
        api_class = type("SwitchApi", (impl_idl.OvsdbIdl,), {"_ovsdb_connection": None})
        try:
            self.api = api_class(conn, auto_index=False)
        except Exception as exc:  # noqa: BLE001 - ovsdbapp wraps whatever failed: one line
            raise SystemFailure(f"cannot connect to the database at {self.remote}: "
                                f"{exc}") from None
        self.watched = set(port_names)
        return self.api

    def _not_applied(self) -> NotApplied:
        return NotApplied(f"ovs-vswitchd did not apply the change within {self.timeout:g} s "
                             f"(is ovs-vswitchd running for {self.remote}?); the database "
                             "holds it and ovs-vswitchd applies it when it starts")

    def apply(self, changes: Iterable[OvsdbChange],
              meanwhile: Callable[[], object] | None = None) -> int:
        """All changes in one ovsdbapp transaction, which waits for ovs-vswitchd to apply
        it, calling ``meanwhile()`` (work that needs no switch) while ovs-vswitchd
        applies the first: ovsdbapp's connection thread only waits then.

        Except one thing: a port removed to be attached again (PortDelete with
        ``reattach``) is created again in a second transaction once ovs-vswitchd has
        applied the first.  Within one transaction ovs-vswitchd sees the same port
        name before and after and keeps the device it holds; a stale handle on a
        re-created device (handles.py) is only dropped when the port is gone.

        Returns the number of changes; raises SystemFailure when a transaction
        fails, NotApplied when ovs-vswitchd does not apply it within the timeout.
        """
        changes = list(changes)
        if not changes:
            return 0
        again = {change.name for change in changes
                 if isinstance(change, PortDelete) and change.reattach}
        later = [change for change in changes
                 if isinstance(change, PortCreate) and change.spec.name in again]
        self._transact([change for change in changes
                        if not any(change is create for create in later)], meanwhile)
        if later:
            log.debug("OVSDB: a second transaction attaches again %s",
                      ", ".join(sorted(change.spec.name for change in later)))
            self._transact(later)
        return len(changes)

    def _transact(self, changes: list[OvsdbChange],
                  meanwhile: Callable[[], object] | None = None) -> None:
        """One transaction, applied by ovs-vswitchd; raises SystemFailure."""
        api = self._connect_api(commands.in_place(changes) | self.watched)
        with api.ovsdb_connection.lock:
            batch = commands.batch(api, changes)
        for change in changes:
            log.debug("OVSDB: %s", change.describe())
        txn = commands.transaction(api)
        for command in batch:
            txn.add(command)
        # ovsdbapp commits in its connection thread; a worker waits for the result.
        # ``meanwhile`` runs once the commit is in and ovs-vswitchd applies it: run
        # while ovsdbapp still builds the transaction and parses the reply, two threads
        # of Python work slowed the commit more than they gained (measured).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ovsdb-commit") as pool:
            committed = pool.submit(txn.commit)
            try:
                if meanwhile is not None:
                    committed.add_done_callback(lambda _: txn.committed.set())
                    txn.committed.wait()
                    meanwhile()
            finally:
                failure = committed.exception()  # the transaction's outcome, always
                if failure is not None:
                    raise self._failed(failure) from None
        # ovsdbapp only logs a switch that never applied the transaction.
        with api.ovsdb_connection.lock:
            root = commands.root_row(api)
            if root.cur_cfg < root.next_cfg:
                raise self._not_applied()

    def _failed(self, exc: BaseException) -> SystemFailure:
        """The failure a user sees for an ovsdbapp transaction that raised ``exc``."""
        from ovsdbapp import exceptions
        from ovsdbapp.backend.ovs_idl import idlutils

        if isinstance(exc, exceptions.TimeoutException):
            return self._not_applied()
        if isinstance(exc, SystemFailure):
            return exc
        if isinstance(exc, idlutils.RowNotFound):
            return SystemFailure(f"{exc} while ovsnvgre was changing it (another client "
                                 "changed the switch meanwhile); run again")
        return SystemFailure(f"the OVSDB transaction failed: {exc}")

    def _raw(self) -> RawClient:
        assert self.raw is not None, "use Switch as a context manager"  # noqa: S101 - an invariant the code above guarantees, not input checking
        return self.raw
