"""JSON-RPC `transact` (RFC 7047) on a plain socket, and the decoding of its rows.

Reading a thousand ports through the ovsdbapp IDL spends most of its time in the
pure-Python JSON parser of the `ovs` package and in row attribute access; a plain
select of the columns ovsnvgre needs, parsed by the stdlib's C JSON decoder, takes
a fraction of that.  Writes go through ovsdbapp (ovsdb/commands.py, switch.py).
"""

from __future__ import annotations

import json
import socket
from typing import Any

from ovsnvgre.actual import PortStatus
from ovsnvgre.errors import SystemFailure
from ovsnvgre.ovsdb.remote import missing_socket


def atom(value: Any) -> Any:
    """An OVSDB JSON atom as Python: ["uuid", u] -> u, plain values as they are."""
    if isinstance(value, list) and len(value) == 2 and value[0] in ("uuid", "named-uuid"):
        return value[1]
    return value


def values(value: Any) -> list[Any]:
    """A set column (or a single atom) as a list."""
    if isinstance(value, list) and len(value) == 2 and value[0] == "set":
        return [atom(v) for v in value[1]]
    return [atom(value)]


def as_map(value: Any) -> dict[str, str]:
    """An OVSDB map column as a dict of strings."""
    pairs = value[1]
    try:
        mapping = dict(pairs)
    except TypeError:  # a uuid key: a list
        mapping = {}
    # Maps of strings (external_ids, options, bfd), 22,000 of them at 11,000 ports,
    # as they came: a call per atom cost 0.4 s there.
    if len(mapping) == len(pairs) and all(type(k) is str and type(v) is str
                                          for k, v in mapping.items()):
        return mapping
    return {str(atom(k)): str(atom(v)) for k, v in pairs}


def interface_status(rows: list[dict[str, Any]]) -> PortStatus:
    """Interface rows (name, ofport, error) as a PortStatus."""
    status = PortStatus()
    for row in rows:
        ofport, error = values(row["ofport"]), values(row["error"])
        status[row["name"]] = (ofport[0] if ofport else None, error[0] if error else None)
    return status


class TransactError(SystemFailure):
    """ovsdb-server refused a transaction; ``error`` is its error name ("timed out",
    "constraint violation", ...)."""

    def __init__(self, message: str, error: str) -> None:
        super().__init__(message)
        self.error = error


class RawClient:
    """A connection to ovsdb-server for plain transactions (RFC 7047 `transact`): the
    reads' selects (and the benchmarks' floor)."""

    def __init__(self, remote: str, timeout: float) -> None:
        """Connects to ``remote`` (unix: or tcp:) within ``timeout`` seconds; raises
        SystemFailure when it cannot.  ``timeout`` also bounds each later reply."""
        self.remote = remote
        self.timeout = timeout
        self.serial = 0
        self.pending = b""
        kind, _, address = remote.partition(":")
        try:
            if kind == "unix":
                missing = missing_socket(remote)
                if missing is not None:
                    raise missing
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

    def transact(self, operations: list[dict[str, Any]], timeout: float | None = None
                 ) -> list[dict[str, Any]]:
        """One transaction of ``operations`` on the Open_vSwitch database: the result of
        each.  ``timeout``: seconds to wait for the reply (a "wait" operation may hold
        it), else the connect timeout.  Raises TransactError (SystemFailure) with
        ovsdb-server's error and details when an operation or the commit fails."""
        self.serial += 1
        request = {"method": "transact", "params": ["Open_vSwitch", *operations],
                   "id": self.serial}
        try:
            if timeout is not None:
                self.sock.settimeout(timeout)
            self.sock.sendall(json.dumps(request, separators=(",", ":")).encode())
            reply = self._reply(self.serial)
        except TimeoutError:
            raise SystemFailure(f"ovsdb-server at {self.remote} did not answer within "
                                f"{timeout or self.timeout:g} s") from None
        except OSError as exc:
            raise SystemFailure(f"reading {self.remote}: {exc.strerror or exc}") from None
        finally:
            if timeout is not None:
                self.sock.settimeout(self.timeout)
        if reply.get("error"):
            raise TransactError(f"ovsdb-server at {self.remote}: {reply['error']}",
                                str(reply["error"]))
        results = reply["result"]
        for result in results:
            if result and "error" in result:
                raise TransactError(f"ovsdb-server at {self.remote}: {result['error']}: "
                                    f"{result.get('details', '')}", result["error"])
        return results

    def _reply(self, serial: int) -> dict[str, Any]:
        """The reply with id ``serial``; echo requests met meanwhile are answered."""
        decoder = json.JSONDecoder()
        while True:
            # Every message is an object: until the data ends with '}' it cannot end
            # with a whole one, and trying to decode it would parse a large reply
            # again for every piece of it that arrives.
            if self.pending.rstrip().endswith(b"}"):
                text = self.pending.decode()
                position = 0
                while True:
                    while position < len(text) and text[position].isspace():
                        position += 1
                    try:
                        message, position = decoder.raw_decode(text, position)
                    except ValueError:
                        break  # incomplete: read more
                    if message.get("method") == "echo":
                        self.sock.sendall(json.dumps({"id": message.get("id"), "error": None,
                                                      "result": message.get("params")}
                                                     ).encode())
                    elif message.get("id") == serial:
                        self.pending = text[position:].encode()
                        return message
                self.pending = text[position:].encode()
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise SystemFailure(f"ovsdb-server at {self.remote} closed the connection")
            self.pending += chunk

    def select(self, tables: dict[str, list[str]], named: dict[str, set[str]] | None = None
               ) -> dict[str, list[dict[str, Any]]]:
        """Every row of each table, with ``_uuid`` and the columns named (RFC 7047
        JSON values); of a table in ``named``, only the rows with those names (one
        select each).  Raises SystemFailure on any error."""
        named = named or {}
        operations, order = [], []
        for table, columns in tables.items():
            wheres = [[["name", "==", name]] for name in sorted(named[table])] \
                if table in named else [[]]
            for where in wheres:
                operations.append({"op": "select", "table": table, "where": where,
                                   "columns": ["_uuid", *columns]})
                order.append(table)
        found: dict[str, list[dict[str, Any]]] = {table: [] for table in tables}
        for table, result in zip(order, self.transact(operations), strict=True):
            found[table] += result["rows"]
        return found

    def close(self) -> None:
        """Close the connection."""
        self.sock.close()
