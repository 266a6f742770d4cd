"""The OVSDB edge: read the switch, apply a plan's rows in one transaction, watch rows.

    remote.py    where the database is; the monitored part of the schema
    select.py    plain JSON-RPC selects, decoded by the stdlib (fast reads)
    switch.py    Switch: read() -> ActualSwitch, apply(changes) in one ovsdbapp transaction
    commands.py  the ovsdbapp commands of each change kind
    monitor.py   row events for `ovsnvgre watch`
"""

from __future__ import annotations

from ovsnvgre.ovsdb.monitor import watch
from ovsnvgre.ovsdb.remote import default_remote, rundir
from ovsnvgre.ovsdb.switch import Switch

__all__ = ["Switch", "default_remote", "rundir", "watch"]
