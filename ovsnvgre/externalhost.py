"""The external sides of one gateway host, for the engine and the survey: what differs
from the fabric (``survey``), what makes `up` refuse (``blockers``), carrying changes
out (``apply``), and the converge's `external` phase (``phase``).  The I/O itself is
externalns.py's; the data and the difference external.py's.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from typing import Any

from ovsnvgre import external, netlink
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
from ovsnvgre.safe import journal


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


def apply(changes: Iterable[ExternalChange],
          making: Callable[[str, str | None, bool], None] | None = None) -> int:
    """Carry ``changes`` out, domain by domain; the number of changes made.  Raises
    SystemFailure (with the netlink or command's reason: pyroute2's NetlinkError, an
    OSError) on the first that fails, so the run rolls back.  ``making`` is called with
    each namespace (its bridge port, and whether it is made new) before this call
    touches it, so that a rollback removes a new one and names a changed one."""
    from pyroute2.netlink.exceptions import NetlinkError  # noqa: PLC0415 - as externalns._ipr

    done = 0
    by_netns: dict[str, list[ExternalChange]] = {}
    for change in changes:
        by_netns.setdefault(change.netns, []).append(change)
    for netns, group in by_netns.items():
        actions = {change.action for change in group}
        side = group[0].side
        try:
            if making is not None:
                making(netns, group[0].bridge_port, "create" in actions)
            if "delete" in actions:
                remove(netns, group[0].bridge_port)
                done += 1
                continue
            assert side is not None  # noqa: S101 - every other change carries its side
            if "create" in actions:
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
    `up`) and deleted after it removed them (``last`` True, on `down`).  Each namespace
    is written into the rollback file before it is made: whoever rolls the run back (the
    run, its confirmation timer, `ovsnvgre rollback` after a crash) deletes it."""
    if run.plan.external and last == run.removing:
        run.save_before_changing()
        run.progress(f"applying {len(run.plan.external)} changes to the routing domains' "
                     "external sides")

        def making(netns: str, bridge_port: str | None, new: bool) -> None:
            extra = run.record.extra  # an adopted record's lists are kept and added to
            if new:
                extra.setdefault(journal.NAMESPACES_MADE, []).append([netns, bridge_port])
            elif netns not in extra.setdefault(journal.NAMESPACES_LEFT, []):
                extra[journal.NAMESPACES_LEFT].append(netns)
            journal.save(run.path, run.record)
        run.kernel_changes += apply(run.plan.external, making)
