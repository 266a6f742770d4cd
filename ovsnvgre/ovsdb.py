"""ovsdbapp: read what the switch holds, apply a Plan's OVSDB part in one transaction."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterable
from typing import Any

from ovsnvgre.errors import SystemFailure
from ovsnvgre.plan import (
    ActualBridge,
    ActualPort,
    BridgeCreate,
    BridgeDelete,
    BridgeUpdate,
    OvsdbChange,
    PortCreate,
    PortDelete,
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
    "Interface": ["name", "type", "options", "external_ids", "ofport", "error", "link_state"],
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


class Switch:
    """One connection to one switch's database, used as a context manager."""

    def __init__(self, remote: str | None = None, timeout: float = 30.0) -> None:
        self.remote = remote or default_remote()
        self.timeout = timeout
        self.api: Any = None

    def __enter__(self) -> Switch:
        from ovsdbapp.backend.ovs_idl import connection, idlutils
        from ovsdbapp.schema.open_vswitch import impl_idl

        helper = idlutils.create_schema_helper(_fetch_schema(self.remote, CONNECT_TIMEOUT))
        for table, columns in MONITORED.items():
            helper.register_columns(table, columns)
        idl = connection.OvsdbIdl(self.remote, helper)
        conn = connection.Connection(idl=idl, timeout=self.timeout)
        # ovsdbapp keeps the connection on the API class, one per process; a
        # class of our own per Switch lets one process drive several switches.
        api_class = type("SwitchApi", (impl_idl.OvsdbIdl,), {"_ovsdb_connection": None})
        try:
            self.api = api_class(conn)
        except Exception as exc:
            raise SystemFailure(f"cannot read the database at {self.remote}: {exc}") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        if self.api is not None:
            self.api.ovsdb_connection.stop(timeout=5)

    # --- reading ----------------------------------------------------------------

    def read(self) -> SwitchState:
        tables = self.api.tables
        with self.api.ovsdb_connection.lock:
            bridge_of: dict[Any, str] = {}
            bridges: dict[str, ActualBridge] = {}
            for row in tables["Bridge"].rows.values():
                port_names = tuple(sorted(port.name for port in row.ports))
                for port in row.ports:
                    bridge_of[port.uuid] = row.name
                bridges[row.name] = ActualBridge(
                    name=row.name, datapath_type=row.datapath_type,
                    protocols=tuple(sorted(row.protocols)),
                    fail_mode=row.fail_mode[0] if row.fail_mode else None,
                    external_ids=dict(row.external_ids), ports=port_names)
            ports: dict[str, ActualPort] = {}
            for row in tables["Port"].rows.values():
                iface = row.interfaces[0] if row.interfaces else None
                ports[row.name] = ActualPort(
                    name=row.name, bridge=bridge_of.get(row.uuid),
                    iface_type=iface.type if iface else "",
                    options=dict(iface.options) if iface else {},
                    external_ids=dict(row.external_ids),
                    iface_external_ids=dict(iface.external_ids) if iface else {},
                    interfaces=len(row.interfaces))
        return SwitchState(bridges=bridges, ports=ports)

    def live_ports(self, names: Iterable[str], wait: float = 0.0) -> set[str]:
        """Those of ``names`` that have an OpenFlow port number.

        ovs-vswitchd reports the number (or an error) right after it applies a
        transaction; ``wait`` gives it that moment for ports that show neither yet.
        """
        import time

        wanted = set(names)
        deadline = time.monotonic() + wait
        while True:
            live, pending = set(), set()
            with self.api.ovsdb_connection.lock:
                for row in self.api.tables["Interface"].rows.values():
                    if row.name not in wanted:
                        continue
                    ofport = row.ofport[0] if row.ofport else None
                    if ofport is not None and ofport > 0:
                        live.add(row.name)
                    elif ofport is None and not row.error:
                        pending.add(row.name)
            if not pending or time.monotonic() >= deadline:
                return live
            time.sleep(0.05)

    def refused_ports(self, names: Iterable[str]) -> dict[str, str]:
        """Ports among ``names`` that ovs-vswitchd could not open, with its reason."""
        wanted = set(names)
        refused: dict[str, str] = {}
        with self.api.ovsdb_connection.lock:
            for row in self.api.tables["Interface"].rows.values():
                if row.name not in wanted:
                    continue
                ofport = row.ofport[0] if row.ofport else None
                if row.error or ofport == -1:
                    refused[row.name] = row.error[0] if row.error else "no OpenFlow port number"
        return refused

    # --- writing ----------------------------------------------------------------

    def _not_applied(self) -> SystemFailure:
        return SystemFailure(f"ovs-vswitchd did not apply the change within {self.timeout:g} s "
                             f"(is ovs-vswitchd running for {self.remote}?); the database "
                             "holds it and ovs-vswitchd applies it when it starts: run `up` "
                             "again then")

    def apply(self, changes: Iterable[OvsdbChange]) -> int:
        """All changes in one transaction, which waits for ovs-vswitchd to apply it."""
        from ovsdbapp import exceptions

        commands = [_ChangeCommand(self.api, change) for change in changes]
        if not commands:
            return 0
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


def _command_base() -> Any:
    from ovsdbapp.backend.ovs_idl import command

    return command.BaseCommand


class _ChangeCommand(_command_base()):  # type: ignore[misc]
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
                     port_ids: dict[str, str], iface_ids: dict[str, str]) -> Any:
        iface = txn.insert(self.api.tables["Interface"])
        iface.name = name
        iface.type = iface_type
        iface.options = options
        iface.external_ids = iface_ids
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
                                     spec.external_ids)
            self._find("Bridge", spec.bridge).addvalue("ports", port)
        elif isinstance(change, PortUpdate):
            port = self._find("Port", change.spec.name)
            iface = port.interfaces[0]
            if change.iface_type is not None:
                iface.type = change.iface_type
            if change.options is not None:
                iface.options = change.options  # replaces the map: stale keys go
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
