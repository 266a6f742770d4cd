"""Where the switch's database is, and the part of its schema ovsnvgre monitors."""

from __future__ import annotations

import errno
import os
from typing import Any

from ovsnvgre.errors import SystemFailure, UsageError

DEFAULT_RUNDIR = "/var/run/openvswitch"
CONNECT_TIMEOUT = 5.0  # seconds

# Monitoring only what ovsnvgre reads halves connect and transaction time on
# big switches (measured with 1,000 ports).  Interface ``ifindex`` is not compared:
# it is there for watch, whose row events then show a VM's device being re-created.
MONITORED = {
    "Open_vSwitch": ["bridges", "cur_cfg", "next_cfg"],
    "Bridge": ["name", "ports", "datapath_type", "protocols", "fail_mode", "external_ids"],
    "Port": ["name", "interfaces", "external_ids"],
    "Interface": ["name", "type", "options", "external_ids", "ofport", "error", "link_state",
                  "ifindex", "bfd", "mtu_request", "mac"],
}


def rundir() -> str:
    """The OVS run directory, absolute: $OVS_RUNDIR, else /var/run/openvswitch."""
    return os.path.abspath(os.environ.get("OVS_RUNDIR", DEFAULT_RUNDIR))


def check_remote(remote: str) -> tuple[str, str, int | None]:
    """(kind, host or socket path, port) of an OVSDB remote: unix:PATH, tcp:HOST:PORT or
    ssl:HOST:PORT (an IPv6 host in brackets); raises UsageError for anything else."""
    kind, _, address = remote.partition(":")
    if kind == "unix" and address:
        return kind, address, None
    if kind in ("tcp", "ssl"):
        host, _, port = address.rpartition(":")
        if host and port.isdigit() and 0 < int(port) < 65536:
            return kind, host.strip("[]"), int(port)
    raise UsageError(f"--db {remote}: expected unix:PATH, tcp:HOST:PORT or ssl:HOST:PORT")


def default_remote() -> str:
    """Where the OVS tools look for the database: unix:$OVS_RUNDIR/db.sock."""
    return f"unix:{rundir()}/db.sock"


def absolute(remote: str) -> str:
    """``remote`` with a relative unix: socket path made absolute (the rollback file,
    the lock and the confirmation timer, started from /, all go by it)."""
    if remote.startswith("unix:"):
        return f"unix:{os.path.abspath(remote[5:])}"
    return remote


def missing_socket(remote: str) -> SystemFailure | None:
    """The error for a unix: remote whose socket does not exist, else None."""
    if remote.startswith("unix:") and not os.path.exists(remote[5:]):
        return SystemFailure(f"cannot reach ovsdb-server at {remote}: no such socket "
                             "(is Open vSwitch running? set OVS_RUNDIR or --db)")
    return None


def fetch_schema(remote: str, timeout: float) -> dict[str, Any]:
    """The Open_vSwitch schema (JSON) with a deadline of ``timeout`` seconds:
    ovsdbapp's own fetch can block for ever on TCP.  Raises SystemFailure."""
    import ovs.jsonrpc
    import ovs.poller
    import ovs.stream
    import ovs.timeval

    missing = missing_socket(remote)
    if missing is not None:
        raise missing
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


def schema_helper(remote: str) -> Any:
    """An ovsdbapp schema helper holding only the tables and columns ovsnvgre reads."""
    from ovsdbapp.backend.ovs_idl import idlutils

    helper = idlutils.create_schema_helper(fetch_schema(remote, CONNECT_TIMEOUT))
    for table, columns in MONITORED.items():
        helper.register_columns(table, columns)
    return helper
