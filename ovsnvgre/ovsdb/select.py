"""One JSON-RPC `transact` select (RFC 7047), and the decoding of its rows.

Reading a thousand ports through the ovsdbapp IDL spends most of its time in the
pure-Python JSON parser of the `ovs` package and in row attribute access; a plain
select of the columns ovsnvgre needs, parsed by the stdlib's C JSON decoder, takes
a fraction of that.  Writes go through ovsdbapp (ovsdb/switch.py).
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
    return {str(atom(k)): str(atom(v)) for k, v in value[1]}


def interface_status(rows: list[dict[str, Any]]) -> PortStatus:
    """Interface rows (name, ofport, error) as a PortStatus."""
    status = PortStatus()
    for row in rows:
        ofport, error = values(row["ofport"]), values(row["error"])
        status[row["name"]] = (ofport[0] if ofport else None, error[0] if error else None)
    return status


class RawClient:
    """A connection to ovsdb-server that only selects."""

    def __init__(self, remote: str, timeout: float) -> None:
        """Connects to ``remote`` (unix: or tcp:) within ``timeout`` seconds; raises
        SystemFailure when it cannot."""
        self.remote = remote
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

    def select(self, tables: dict[str, list[str]], named: dict[str, set[str]] | None = None  # noqa: C901 - one decision per branch, each documented; splitting would scatter it
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
        found: dict[str, list[dict[str, Any]]] = {table: [] for table in tables}
        for table, result in zip(order, results, strict=True):
            found[table] += result["rows"]
        return found

    def close(self) -> None:
        """Close the connection."""
        self.sock.close()
