"""Which VM port devices ovs-vswitchd still holds on the userspace datapath.

On the userspace (netdev) datapath ovs-vswitchd receives from a system port through
an AF_PACKET socket bound to the device's interface index.  When the device is
deleted and re-created under the same name (a VM restart with a fixed tap name),
that socket stays bound to the deleted device (the kernel shows its index as -1)
and nothing re-opens it: the port keeps its OpenFlow number, has no error, and the
Interface row's ``ifindex`` column even follows the new device, yet no frame from
the VM reaches the switch.  What tells it apart is the socket: a port is stale when
no packet socket of ovs-vswitchd is bound to its device's current index.

The facts come from /proc (this network namespace's ``/proc/net/packet``, the
socket inodes among ovs-vswitchd's open files) and netlink (the devices' indexes);
ovs-vswitchd must run in this network namespace.  Reading another process's open
files needs root, as `up` does.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ovsnvgre import netlink
from ovsnvgre.ovsdb.remote import rundir

PIDFILE = "ovs-vswitchd.pid"
PROC = Path("/proc")


@dataclass(frozen=True)
class HandleCheck:
    """The result of one check: the stale ports, or why the check could not be made."""

    # port name -> its device's interface index now, which no ovs-vswitchd socket is on
    stale: dict[str, int] = field(default_factory=dict)
    unknown: str | None = None  # why the check could not be made (then ``stale`` is empty)


def check(ports: Iterable[str], remote: str) -> HandleCheck:
    """Which of ``ports`` (system-type ports on userspace bridges, with an OpenFlow
    number) ovs-vswitchd no longer receives from, because their device was re-created.

    A port whose device does not exist now is not stale (ovs-vswitchd opens nothing
    until the device is back, and reports that in the Interface row).  ``remote`` is
    the database's address: ovs-vswitchd's pidfile is looked for beside its socket,
    else in the OVS run directory.  Never raises for what it cannot read: it says
    why in ``unknown``.
    """
    indexes = netlink.link_indexes(ports)
    if not indexes:
        return HandleCheck()
    try:
        pid = vswitchd_pid(remote)
        if pid is None:
            return HandleCheck(unknown="ovs-vswitchd was not found running in this network "
                                       "namespace")
        bound = bound_indexes(socket_inodes(pid))
    except OSError as exc:
        return HandleCheck(unknown=f"cannot read ovs-vswitchd's sockets: "
                                   f"{exc.strerror or exc}")
    return HandleCheck(stale={name: index for name, index in sorted(indexes.items())
                              if index not in bound})


def _run_directory(remote: str) -> Path:
    if remote.startswith("unix:"):
        return Path(remote[5:]).parent
    return Path(rundir())


def _is_local_vswitchd(pid: int) -> bool:
    try:
        comm = (PROC / str(pid) / "comm").read_text().strip()
        return comm == "ovs-vswitchd" and (os.readlink(PROC / str(pid) / "ns" / "net")
                                           == os.readlink(PROC / "self" / "ns" / "net"))
    except OSError:
        return False


def vswitchd_pid(remote: str) -> int | None:
    """The pid of the ovs-vswitchd of ``remote`` running in this network namespace:
    from its pidfile, else the one such process; None when there is none (or several
    and no pidfile says which)."""
    try:
        pid = int((_run_directory(remote) / PIDFILE).read_text().strip())
    except (OSError, ValueError):
        pid = None
    if pid is not None and _is_local_vswitchd(pid):
        return pid
    found = [int(entry.name) for entry in PROC.iterdir()
             if entry.name.isdigit() and _is_local_vswitchd(int(entry.name))]
    return found[0] if len(found) == 1 else None


def socket_inodes(pid: int) -> set[int]:
    """The inode numbers of the sockets process ``pid`` has open; raises OSError."""
    inodes = set()
    fds = PROC / str(pid) / "fd"
    for fd in os.listdir(fds):
        try:
            target = os.readlink(fds / fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def bound_indexes(inodes: set[int]) -> set[int]:
    """The interface indexes the packet sockets among ``inodes`` are bound to, from
    this network namespace's /proc/net/packet (-1: bound to a deleted device)."""
    lines = (PROC / "net" / "packet").read_text().splitlines()
    if not lines:
        return set()
    header = lines[0].split()
    iface, inode = header.index("Iface"), header.index("Inode")
    bound = set()
    for line in lines[1:]:
        fields = line.split()
        if len(fields) == len(header) and int(fields[inode]) in inodes:
            bound.add(int(fields[iface]))
    return bound
