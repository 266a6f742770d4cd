"""Carry out a run's way back: owned rows, then links, then owned flows (the snapshot's),
then the routing domains' namespaces the run made (the record's)."""

from __future__ import annotations

from ovsnvgre import externalns, netlink, openflow
from ovsnvgre.ovsdb import Switch
from ovsnvgre.plan import is_owned
from ovsnvgre.progress import Progress, quiet
from ovsnvgre.safe import journal, snapshot


def restore(switch: Switch, snap: snapshot.Snapshot, progress: Progress = quiet) -> int:
    """Put the owned rows, the links and the owned flows back as ``snap`` holds them.

    Rows go back in one OVSDB transaction, then (once ovs-vswitchd has made the
    internal ports again) addresses, routes and link states, then the flows in one
    bundle.  Returns the number of changes made; raises SystemFailure.
    """
    count = 0
    rows = snapshot.restore_rows(snap, switch.read())
    if rows:
        progress(f"restoring {len(rows)} OVSDB rows in one transaction")
        count += switch.apply(rows)
    actual = switch.read()
    recreated = [name for name in snap.links if name in actual.ports
                 and actual.ports[name].iface_type == "internal"]
    netlink.wait_for_links(recreated)
    kernel_changes = snapshot.restore_kernel(snap, netlink.read(snap.links))
    if kernel_changes:
        progress(f"restoring {len(kernel_changes)} addresses, routes and link states")
        count += netlink.apply(kernel_changes)
    bridge = actual.bridges.get(snap.flow_bridge)
    if bridge is not None and is_owned(bridge.external_ids, snap.owner):
        names = snap.port_names()
        gone = frozenset(names - switch.port_status(names, wait=5.0).live())
        if gone:
            left = sum(1 for flow in snap.flows if snapshot.names_port(flow, gone))
            progress(f"not restored: {left} flows of {', '.join(sorted(gone))}, whose device "
                     "is gone (the next `ovsnvgre up` makes it and its flows again)")
        flows = snapshot.restore_flows(snap, openflow.dump(snap.flow_bridge), gone)
        if flows:
            progress(f"restoring {len(flows.add) + len(flows.delete)} flows in one bundle")
            count += openflow.apply(flows.bridge, flows.add, flows.delete)
    return count


def left_behind(record: journal.Record) -> str:
    """"" when a rollback of ``record``'s run returns the host to the state before it;
    else the clause that names the routing domains' namespaces the run deleted or
    changed, which a rollback does not make again (``journal.NAMESPACES_LEFT``)."""
    left = record.extra.get(journal.NAMESPACES_LEFT, [])
    if not left:
        return ""
    return (f"; except namespace(s) {', '.join(sorted(left))}, which the run deleted or changed "
            "and a rollback does not make again: their routing domains' way out is not as "
            "before until `ovsnvgre up` with the fabric file of before the run")


def restore_record(switch: Switch, record: journal.Record, progress: Progress = quiet) -> int:
    """Return the host to the state before ``record``'s run: ``restore`` of its snapshot,
    then delete the routing domains' namespaces the run made or began to make
    (``record.extra[journal.NAMESPACES_MADE]``, newest first).  The same way back for the
    run itself, the confirmation timer and `ovsnvgre rollback` after a crash.  Returns the
    number of changes made; raises SystemFailure."""
    count = restore(switch, record.snapshot, progress)
    made = record.extra.get(journal.NAMESPACES_MADE, [])
    if made:
        progress(f"deleting {len(made)} namespace(s) the run made: "
                 + ", ".join(netns for netns, _ in made))
    for netns, bridge_port in reversed(made):
        externalns.remove(netns, bridge_port)
        count += 1
    return count
