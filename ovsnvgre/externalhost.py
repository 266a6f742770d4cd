"""The external sides of one gateway host, for the engine and the survey: what differs
from the fabric (``survey``), what makes `up` refuse (``blockers``), carrying changes
out (``apply``), and the converge's `external` phase (``phase``).  The I/O itself is
externalns.py's; the data and the difference external.py's.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable
from typing import Any

from ovsnvgre import external, netlink
from ovsnvgre.actual import PortStatus
from ovsnvgre.errors import SystemFailure
from ovsnvgre.external import ActualSide, ExternalChange, ExternalSide
from ovsnvgre.externalns import (
    converge,
    create,
    link_exists,
    make_links,
    master_of,
    mount_blocker,
    owned_namespaces,
    read,
    remove,
    write_sysctls,
)
from ovsnvgre.model import Fabric
from ovsnvgre.safe.restore import restore as restore_snapshot


def survey(fabric: Fabric, host: str, removing: bool = False
           ) -> tuple[dict[str, ActualSide], list[ExternalChange]]:
    """Each of this fabric's namespaces on ``host`` as it is (by name), and the changes
    that make them match the fabric (or, ``removing``, delete them all).  Namespaces of
    the fabric's prefix whose mark names another fabric are left alone."""
    wanted: dict[str, ExternalSide] = {}
    if not removing and fabric.gateway_domains(host):
        wanted = {side.netns: side
                  for side in external.sides(fabric, host, own_addresses()).values()}
    found: dict[str, ActualSide] = {}
    changes: list[ExternalChange] = []
    for netns, side in wanted.items():
        found[netns] = read(netns, side.bridge_port)
        changes += external.diff(side, found[netns])
    for netns in owned_namespaces(f"{external.NETNS_PREFIX}{fabric.name}-"):
        if netns in wanted:
            continue
        actual = read(netns)
        if external.owned(fabric, host, netns, actual.marker):
            found[netns] = actual
            domain = netns.removeprefix(f"{external.NETNS_PREFIX}{fabric.name}-")
            changes.append(ExternalChange(domain, netns, "delete", None,
                                          external.bridge_port(fabric, domain)))
    return found, changes


def own_addresses() -> frozenset:
    """This host's own IPv4 addresses but loopback's 127/8 (IPv4Address), which no VM
    may reach through a gateway (external.blocked)."""
    return frozenset(address for address in netlink.local_addresses()
                     if address.version == 4 and not address.is_loopback)


def blockers(fabric: Fabric, host: str, changes: Iterable[ExternalChange] = (),
             removing: bool = False) -> list[str]:
    """What makes `up` or `down` refuse before any change on a gateway host: a run that
    would create or delete a namespace from a private mount namespace (`ip netns
    exec`); on `up`, no `nft` here, an external NIC that does not exist or is enslaved
    (a macvlan cannot sit on a bridge's or bond's port: the kernel answers EBUSY); one
    line each."""
    found = []
    if any(change.action in ("create", "delete") for change in changes):
        blocker = mount_blocker()
        if blocker is not None:
            found.append(blocker)
    if removing:
        return found
    if fabric.gateway_domains(host) and shutil.which("nft") is None:
        found.append("nft not found: the external gateways need it (apt-get install nftables)")
    for domain in fabric.gateway_domains(host):
        nic = domain.external.nic if domain.external else ""
        if not link_exists(nic):
            found.append(f"routing domain {domain.name}'s external NIC {nic} does not exist "
                         "on this host")
        elif (master := master_of(nic)) is not None:
            found.append(f"routing domain {domain.name}'s external NIC {nic} is enslaved to "
                         f"{master}: the domain's macvlan cannot sit on it")
    return found


def apply(changes: Iterable[ExternalChange], created: list[tuple[str, str | None]] | None = None
          ) -> int:
    """Carry ``changes`` out, domain by domain; the number of changes made.  Raises
    SystemFailure (with the netlink or command's reason: pyroute2's NetlinkError, an
    OSError) on the first that fails, so the run rolls back.  ``created``: each
    namespace (and its bridge port) this call begins to make is appended to it, before
    it is made, so that a rollback removes it (``undo``)."""
    from pyroute2.netlink.exceptions import NetlinkError  # noqa: PLC0415 - as externalns._ipr

    done = 0
    by_netns: dict[str, list[ExternalChange]] = {}
    for change in changes:
        by_netns.setdefault(change.netns, []).append(change)
    for netns, group in by_netns.items():
        actions = {change.action for change in group}
        side = group[0].side
        try:
            if "delete" in actions:
                remove(netns, group[0].bridge_port)
                done += 1
                continue
            assert side is not None  # noqa: S101 - every other change carries its side
            if "create" in actions:
                if created is not None:
                    created.append((netns, side.bridge_port))
                create(side)
                done += 1
                continue
            if "links" in actions:
                make_links(side)
                done += 1
            if actions & {"links", "sysctls"}:
                write_sysctls(side)  # the links' own settings are new with them
                done += 1
            if actions - {"sysctls", "links"} or "links" in actions:
                done += converge(side, read(netns, side.bridge_port))
        except (OSError, NetlinkError) as exc:  # NetlinkError is no OSError (pyroute2 0.9)
            code = getattr(exc, "code", None)
            reason = os.strerror(code) if isinstance(code, int) and code > 0 else str(exc)
            raise SystemFailure(f"namespace {netns}: {reason}") from exc
    return done


def phase(run: Any, last: bool) -> None:
    """engine's `external` phase of ``run`` (an engine.Converge): the domains' namespaces
    are made before the OVSDB transaction adds their bridge ports (``last`` False, on
    `up`) and deleted after it removed them (``last`` True, on `down`)."""
    if run.plan.external and last == run.removing:
        run.save_before_changing()
        run.progress(f"applying {len(run.plan.external)} changes to the routing domains' "
                     "external sides")
        run.external_created = getattr(run, "external_created", [])
        run.kernel_changes += apply(run.plan.external, run.external_created)


def ports_made(changes: Iterable[ExternalChange], removing: bool) -> set[str]:
    """The bridge ports whose veth the external phase of `up` made (a namespace created,
    or its links made again): their Port rows may be older than the device (a reboot
    keeps the rows and loses the namespaces), so no OVSDB write tells ovs-vswitchd."""
    if removing:
        return set()
    return {change.bridge_port for change in changes
            if change.action in ("create", "links") and change.bridge_port is not None}


def port_status(switch: Any, names: set[str], made: set[str], wait: float = 5.0) -> PortStatus:
    """``switch.port_status(names)`` (an ovsdb.Switch) once each port of ``made`` has an
    OpenFlow number, or ``wait`` seconds have passed.  A row older than its device still
    holds the error of the start of ovs-vswitchd ("could not open network device ... (No
    such device)") until ovs-vswitchd, told of the new link by rtnetlink, opens it: read
    before that, the port would be refused and its flows left out."""
    deadline = time.monotonic() + wait
    while True:
        status = switch.port_status(names, wait=wait)
        opened = status.live()
        if made <= opened or time.monotonic() >= deadline:
            return status
        time.sleep(0.02)


def restore(run: Any) -> int:
    """engine's rollback of ``run`` (an engine.Converge): the rows, links and flows its
    snapshot holds (safe/restore.py), then ``undo``; the number of changes undone.
    Raises SystemFailure."""
    return restore_snapshot(run.switch, run.record.snapshot, run.progress) + undo(run)


def undo(run: Any) -> int:
    """For engine's rollback of ``run``: remove the namespaces the run made (or began to
    make); the number removed.  A namespace the run deleted (`down`) or changed is not
    put back: the next `up` makes or converges it, and the progress says so."""
    if not hasattr(run, "external_created"):
        return 0  # the external phase did not run
    undone = 0
    for netns, port in reversed(run.external_created):
        remove(netns, port)
        undone += 1
    kept = [change.netns for change in run.plan.external if change.action != "create"]
    if kept:
        run.progress(f"not rolled back: {', '.join(sorted(set(kept)))} (deleted or changed "
                     "by the run; the next `ovsnvgre up` makes or converges them)")
    return undone
