"""ovsdbapp: read what the switch holds, apply a Plan's OVSDB part in one transaction."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

from ovsnvgre.errors import SystemFailure
from ovsnvgre.plan import (
    ActualBridge,
    ActualPort,
    OvsdbChange,
    PortDelete,
    PortStatus,
    PortUpdate,
    SwitchState,
)

DEFAULT_RUNDIR = "/var/run/openvswitch"
CONNECT_TIMEOUT = 5.0

# Monitoring only what ovsnvgre reads halves connect and transaction time on
# big switches (measured with 1,000 ports).
MONITORED = {
    "Open_vSwitch": ["bridges", "cur_cfg", "next_cfg"],
    "Bridge": ["name", "ports", "datapath_type", "protocols", "fail_mode", "external_ids"],
    "Port": ["name", "interfaces", "external_ids"],
    "Interface": ["name", "type", "options", "external_ids", "ofport", "error", "link_state",
                  "bfd", "mtu_request"],
}

log = logging.getLogger(__name__)


def rundir() -> str:
    return os.environ.get("OVS_RUNDIR", DEFAULT_RUNDIR)


def default_remote() -> str:
    """Where the OVS tools look for the database: unix:$OVS_RUNDIR/db.sock."""
    return f"unix:{rundir()}/db.sock"


def _fetch_schema(remote: str, timeout: float) -> dict[str, Any]:
    """get_schema with a deadline: ovsdbapp's own fetch can block for ever on TCP."""
    import ovs.jsonrpc
    import ovs.poller
    import ovs.stream
    import ovs.timeval

    if remote.startswith("unix:") and not os.path.exists(remote[5:]):
        raise SystemFailure(f"cannot reach ovsdb-server at {remote}: no such socket "
                            "(is Open vSwitch running? set OVS_RUNDIR or --db)")
    deadline = ovs.timeval.msec() + timeout * 1000
    error, stream = ovs.stream.Stream.open_block(ovs.stream.Stream.open(remote),
                                                 int(timeout * 1000))
    if error:
        raise SystemFailure(f"cannot reach ovsdb-server at {remote}: {os.strerror(error)}")
    rpc = ovs.jsonrpc.Connection(stream)
    try:
        error = rpc.send(ovs.jsonrpc.Message.create_request("get_schema", ["Open_vSwitch"]))
        while not error:
            rpc.run()
            error, reply = rpc.recv()
            if error == errno.EAGAIN:
                if ovs.timeval.msec() > deadline:
                    error = errno.ETIMEDOUT
                    break
                poller = ovs.poller.Poller()
                rpc.wait(poller)
                rpc.recv_wait(poller)
                poller.timer_wait_until(deadline)
                poller.block()
                error = 0
                continue
            if error:
                break
            if reply.error:
                raise SystemFailure(f"ovsdb-server at {remote} has no Open_vSwitch database: "
                                    f"{reply.error}")
            return reply.result
    finally:
        rpc.close()
    raise SystemFailure(f"cannot reach ovsdb-server at {remote}: "
                        f"{os.strerror(error) if error > 0 else 'connection closed'}")


def _schema_helper(remote: str) -> Any:
    """The Open_vSwitch schema with only the tables and columns ovsnvgre reads."""
    from ovsdbapp.backend.ovs_idl import idlutils

    helper = idlutils.create_schema_helper(_fetch_schema(remote, CONNECT_TIMEOUT))
    for table, columns in MONITORED.items():
        helper.register_columns(table, columns)
    return helper


def watch(remote: str, on_change: Callable[[str], None], timeout: float = 30.0
          ) -> Callable[[], None]:
    """Call ``on_change`` (from another thread) on every change of the rows ovsnvgre reads.

    An ovsdbapp IDL monitors the same tables and columns as a run reads, and
    RowEvents report each create, update and delete; returns the function that
    stops it.
    """
    from ovsdbapp.backend.ovs_idl import connection, event

    helper = _schema_helper(remote)
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


def _atom(value: Any) -> Any:
    """An OVSDB JSON atom as Python: ["uuid", u] -> u, plain values as they are."""
    if isinstance(value, list) and len(value) == 2 and value[0] in ("uuid", "named-uuid"):
        return value[1]
    return value


def _values(value: Any) -> list[Any]:
    """A set column (or a single atom) as a list."""
    if isinstance(value, list) and len(value) == 2 and value[0] == "set":
        return [_atom(v) for v in value[1]]
    return [_atom(value)]


def _map(value: Any) -> dict[str, str]:
    return {str(_atom(k)): str(_atom(v)) for k, v in value[1]}


def _status(rows: list[dict[str, Any]]) -> PortStatus:
    status = PortStatus()
    for row in rows:
        ofport, error = _values(row["ofport"]), _values(row["error"])
        status[row["name"]] = (ofport[0] if ofport else None, error[0] if error else None)
    return status


class _RawClient:
    """One JSON-RPC `transact` select, parsed by the stdlib's C JSON decoder.

    Reading a thousand ports through the IDL spends most of its time in the
    pure-Python JSON parser of the `ovs` package and in row attribute access;
    a plain select of the columns ovsnvgre needs takes a fraction of that.
    Writes still go through ovsdbapp.
    """

    def __init__(self, remote: str, timeout: float) -> None:
        import socket

        self.remote = remote
        kind, _, address = remote.partition(":")
        try:
            if kind == "unix":
                if not os.path.exists(address):
                    raise SystemFailure(f"cannot reach ovsdb-server at {remote}: no such socket "
                                        "(is Open vSwitch running? set OVS_RUNDIR or --db)")
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(timeout)
                self.sock.connect(address)
            elif kind == "tcp":
                host, _, port = address.rpartition(":")
                self.sock = socket.create_connection((host.strip("[]"), int(port)), timeout)
            else:
                raise SystemFailure(f"--db {remote}: only unix: and tcp: remotes are supported")
        except OSError as exc:
            raise SystemFailure(f"cannot reach ovsdb-server at {remote}: "
                                f"{exc.strerror or exc}") from None

    def select(self, tables: dict[str, list[str]]) -> dict[str, list[dict[str, Any]]]:
        import json

        operations = [{"op": "select", "table": table, "where": [],
                       "columns": ["_uuid", *columns]} for table, columns in tables.items()]
        request = {"method": "transact", "params": ["Open_vSwitch", *operations], "id": 1}
        decoder = json.JSONDecoder()
        pending = b""
        reply: dict[str, Any] | None = None
        try:
            self.sock.sendall(json.dumps(request).encode())
            while reply is None:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    raise SystemFailure(f"ovsdb-server at {self.remote} closed the connection")
                pending += chunk
                # Every message is an object: until the data ends with '}' it cannot
                # end with a whole one, and trying to decode it would parse a large
                # reply again for every piece of it that arrives.
                if not pending.rstrip().endswith(b"}"):
                    continue
                text = pending.decode()
                position = 0
                while reply is None:
                    while position < len(text) and text[position].isspace():
                        position += 1
                    try:
                        message, position = decoder.raw_decode(text, position)
                    except ValueError:
                        break  # incomplete: read more
                    if message.get("id") == 1 and "result" in message:
                        reply = message
                    # Anything else (an echo request) is not our answer.
                pending = text[position:].encode()
        except OSError as exc:
            raise SystemFailure(f"reading {self.remote}: {exc.strerror or exc}") from None
        if reply.get("error"):
            raise SystemFailure(f"ovsdb-server at {self.remote}: {reply['error']}")
        results = reply["result"]
        for result in results:
            if "error" in result:
                raise SystemFailure(f"ovsdb-server at {self.remote}: {result['error']}: "
                                    f"{result.get('details', '')}")
        return {table: result["rows"] for table, result in zip(tables, results, strict=True)}

    def close(self) -> None:
        self.sock.close()


class Switch:
    """One switch's database, used as a context manager.

    Reads are plain selects; the ovsdbapp connection that writes is opened only
    when there is something to write.
    """

    def __init__(self, remote: str | None = None, timeout: float = 30.0) -> None:
        self.remote = remote or default_remote()
        self.timeout = timeout
        self.api: Any = None
        self.watched: set[str] = set()  # the Port and Interface rows the API's IDL holds
        self.raw: _RawClient | None = None

    def __enter__(self) -> Switch:
        self.raw = _RawClient(self.remote, CONNECT_TIMEOUT)
        return self

    def _connect_api(self, port_names: Iterable[str]) -> Any:
        """The ovsdbapp API, its IDL holding only the Port and Interface rows named.

        A transaction only needs to see the rows it changes in place: new rows are
        inserted, and a bridge's port set is changed by mutation.  Monitoring a
        thousand ports to add one would cost a second of pure-Python JSON.
        """
        if self.api is not None:
            return self.api
        from ovsdbapp.backend.ovs_idl import connection
        from ovsdbapp.schema.open_vswitch import impl_idl

        idl = connection.OvsdbIdl(self.remote, _schema_helper(self.remote))
        self.watched = set(port_names)
        wanted = [["name", "==", name] for name in sorted(self.watched)] or [False]
        for table in ("Port", "Interface"):
            idl.cond_change(table, wanted)
        conn = connection.Connection(idl=idl, timeout=self.timeout)
        # ovsdbapp keeps the connection on the API class, one per process; a
        # class of our own per Switch lets one process drive several switches.
        # No name indexes: the commands find rows themselves, and keeping the
        # indexes sorted cost ~35 ms of a 1,000-port transaction.
        api_class = type("SwitchApi", (impl_idl.OvsdbIdl,), {"_ovsdb_connection": None})
        try:
            self.api = api_class(conn, auto_index=False)
        except Exception as exc:
            raise SystemFailure(f"cannot read the database at {self.remote}: {exc}") from exc
        return self.api

    def __exit__(self, *exc: object) -> None:
        if self.api is not None:
            self.api.ovsdb_connection.stop(timeout=5)
        if self.raw is not None:
            self.raw.close()

    # --- reading ----------------------------------------------------------------

    def _select(self, tables: dict[str, list[str]]) -> dict[str, list[dict[str, Any]]]:
        assert self.raw is not None, "use Switch as a context manager"
        return self.raw.select(tables)

    def read(self) -> SwitchState:
        rows = self._select({name: MONITORED[name] for name in ("Bridge", "Port", "Interface")})
        ifaces = {row["_uuid"][1]: row for row in rows["Interface"]}
        ports_by_uuid = {row["_uuid"][1]: row for row in rows["Port"]}
        bridge_of: dict[str, str] = {}
        bridges: dict[str, ActualBridge] = {}
        for row in rows["Bridge"]:
            members = _values(row["ports"])
            for uuid in members:
                bridge_of[uuid] = row["name"]
            fail_mode = _values(row["fail_mode"])
            bridges[row["name"]] = ActualBridge(
                name=row["name"], datapath_type=row["datapath_type"],
                protocols=tuple(sorted(_values(row["protocols"]))),
                fail_mode=fail_mode[0] if fail_mode else None,
                external_ids=_map(row["external_ids"]),
                ports=tuple(sorted(ports_by_uuid[u]["name"] for u in members
                                   if u in ports_by_uuid)))
        ports: dict[str, ActualPort] = {}
        for uuid, row in ports_by_uuid.items():
            members = [ifaces[u] for u in _values(row["interfaces"]) if u in ifaces]
            iface = members[0] if members else None
            ports[row["name"]] = ActualPort(
                name=row["name"], bridge=bridge_of.get(uuid),
                iface_type=iface["type"] if iface else "",
                options=_map(iface["options"]) if iface else {},
                external_ids=_map(row["external_ids"]),
                iface_external_ids=_map(iface["external_ids"]) if iface else {},
                interfaces=len(members),
                bfd=_map(iface["bfd"]) if iface else {},
                mtu_request=next(iter(_values(iface["mtu_request"])), None) if iface else None)
        return SwitchState(bridges=bridges, ports=ports,
                           interfaces=_status(rows["Interface"]))

    def bridge_external_ids(self) -> dict[str, dict[str, str]]:
        """Each bridge's external_ids, by name: all it takes to tell whose a bridge is."""
        rows = self._select({"Bridge": ["name", "external_ids"]})["Bridge"]
        return {row["name"]: _map(row["external_ids"]) for row in rows}

    def port_status(self, names: Iterable[str], wait: float = 0.0) -> PortStatus:
        """The OpenFlow port number and error of each interface among ``names``.

        ovs-vswitchd reports the number (or an error) right after it applies a
        transaction; ``wait`` gives it that moment for ports that show neither yet.
        """
        import time

        wanted = set(names)
        deadline = time.monotonic() + wait
        while True:
            rows = self._select({"Interface": ["name", "ofport", "error"]})["Interface"]
            status = _status(rows).only(wanted)
            pending = [n for n, (ofport, error) in status.items()
                       if ofport is None and error is None]
            if not pending or time.monotonic() >= deadline:
                return status
            time.sleep(0.05)

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
                "ofport": next(iter(_values(row["ofport"])), None),
                "error": next(iter(_values(row["error"])), None),
                "link_state": next(iter(_values(row["link_state"])), None),
                "mtu": next(iter(_values(row["mtu"])), None),
                "statistics": {k: int(v) for k, v in _map(row["statistics"]).items()},
                "bfd_status": _map(row["bfd_status"]),
            }
        return details

    # --- writing ----------------------------------------------------------------

    def _not_applied(self) -> SystemFailure:
        return SystemFailure(f"ovs-vswitchd did not apply the change within {self.timeout:g} s "
                             f"(is ovs-vswitchd running for {self.remote}?); the database "
                             "holds it and ovs-vswitchd applies it when it starts")

    def apply(self, changes: Iterable[OvsdbChange]) -> int:
        """All changes in one transaction, which waits for ovs-vswitchd to apply it."""
        from ovsdbapp import exceptions

        changes = list(changes)
        if not changes:
            return 0
        from ovsnvgre.ovsdb_commands import ChangeCommand  # ovsdbapp: only when writing

        in_place = {change.spec.name if isinstance(change, PortUpdate) else change.name
                    for change in changes if isinstance(change, PortUpdate | PortDelete)}
        if self.api is not None and not in_place <= self.watched:
            # A second transaction (a rollback) that changes other rows in place.
            self.api.ovsdb_connection.stop(timeout=5)
            self.api = None
        api = self._connect_api(in_place | self.watched)
        commands = [ChangeCommand(api, change) for change in changes]
        for change in changes:
            log.debug("OVSDB: %s", change.describe())
        try:
            with self.api.transaction(check_error=True, log_errors=False) as txn:
                for command in commands:
                    txn.add(command)
        except exceptions.TimeoutException:
            raise self._not_applied() from None
        except SystemFailure:
            raise
        except Exception as exc:
            raise SystemFailure(f"the OVSDB transaction failed: {exc}") from exc
        # ovsdbapp only logs a switch that never applied the transaction.
        with self.api.ovsdb_connection.lock:
            ovs = self.api._ovs
            if ovs.cur_cfg < ovs.next_cfg:
                raise self._not_applied()
        return len(commands)
