"""The external sides' I/O edge: each routing domain's namespace on the gateway host
(external.py says what it holds).  Links, addresses, routes and neighbours through
netlink (pyroute2, inside the namespace with ``NetNS``); the nftables ruleset through
``nft -f`` run in the namespace (one file, one atomic transaction; the ``nftables``
Debian package); namespaces made and removed with ``ip netns``.

Nothing here reads or writes the host's own netfilter, routes or addresses: the only
links made outside a namespace are the veth's end on the integration bridge (made with
its peer inside, in one request) and nothing else (the macvlan is made directly inside).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ovsnvgre import external
from ovsnvgre.errors import SystemFailure
from ovsnvgre.external import (
    INSIDE_LINK,
    NFT_TABLE,
    OUTSIDE_LINK,
    SYSCTLS,
    ActualSide,
    ExternalSide,
)
from ovsnvgre.lab import proc

log = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")
RTNH_F_ONLINK = 0x04
NUD_PERMANENT = 0x80
MAIN_TABLE = 254
IFF_UP = 0x1
CONNTRACK_COUNT = "/proc/sys/net/netfilter/nf_conntrack_count"


def _ipr() -> Any:
    from pyroute2 import IPRoute  # noqa: PLC0415 - imported here: ~0.15 s that `--help` need not pay

    return IPRoute()


@contextlib.contextmanager
def _netns(name: str) -> Iterator[Any]:
    """An IPRoute whose netlink socket lives in the namespace ``name`` (which must exist).

    The socket is made with this thread moved into the namespace for that moment only
    (setns(2) moves the calling thread): pyroute2's own NetNS forks a child for it,
    which can deadlock beside the underlay probe's thread, and makes the namespace in
    this mount namespace when it is missing."""
    from pyroute2 import IPRoute  # noqa: PLC0415 - as _ipr
    from pyroute2 import netns as pyroute2_netns  # noqa: PLC0415 - as _ipr

    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(NETNS_DIR / name, os.O_RDONLY)
    except OSError:
        os.close(own)
        raise
    try:
        pyroute2_netns.setns(target, flags=0)
        try:
            ipr = IPRoute()
        finally:
            pyroute2_netns.setns(own, flags=0)
    finally:
        os.close(target)
        os.close(own)
    try:
        yield ipr
    finally:
        ipr.close()


def _run(argv: list[str], stdin: str | None = None, check: bool = True
         ) -> subprocess.CompletedProcess:
    log.debug("running %s", " ".join(argv))
    return proc.run(*argv, stdin=stdin, check=check)


def _in(netns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv]


def _machine_mount_ns() -> list[str]:
    """The prefix that runs ``ip netns add/delete`` in the machine's mount namespace.

    A name is a bind mount under /run/netns: made from a private mount namespace (a
    systemd unit's, or `ip netns exec`'s, as the lab runs every host's command) it would
    vanish when the command exits, and a delete there would not reach the machine's
    mount.  PID 1's mount namespace is used when it can be read and is not ours; when it
    cannot be read and /run/netns is a slave mount here (`ip netns exec`), the run is
    refused (``mount_blocker``, before any change) rather than making a namespace that
    vanishes."""
    try:
        if os.readlink("/proc/self/ns/mnt") != os.readlink("/proc/1/ns/mnt"):
            return ["nsenter", "--mount=/proc/1/ns/mnt", "--"]
        return []
    except OSError:
        pass
    blocker = mount_blocker()
    if blocker is not None:
        raise SystemFailure(blocker)
    return []


def mount_blocker() -> str | None:
    """Why this run cannot make or delete a domain's namespace (one line), or None.

    Checked before the first change of a run that will create or delete one: from
    under `ip netns exec` the name would vanish (or stay) behind the run's back."""
    try:
        os.readlink("/proc/1/ns/mnt")
        return None
    except OSError:
        pass
    if not _slave_mount(str(NETNS_DIR)):
        return None
    return (f"this run is in a private mount namespace whose {NETNS_DIR} only receives "
            "mounts (as under `ip netns exec`): a routing domain's namespace made or "
            "deleted here would vanish (or stay) when it exits; run it in the machine's "
            "mount namespace (`nsenter --net=...` enters only the network namespace)")


def _slave_mount(path: str) -> bool:
    """Whether the mount holding ``path`` receives mounts but shares none
    (/proc/self/mountinfo: a ``master:`` and no ``shared:`` optional field)."""
    best, fields = "", []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            parts = line.split(" - ")[0].split()
            point = parts[4]
            if (path == point or path.startswith(point.rstrip("/") + "/")) \
                    and len(point) >= len(best):
                best, fields = point, parts[6:]
    return any(f.startswith("master:") for f in fields) and \
        not any(f.startswith("shared:") for f in fields)


def exists(netns: str) -> bool:
    """Whether the named network namespace exists (its name is a mount: an empty file
    of that name is the leftover of a mount that vanished)."""
    return os.path.ismount(NETNS_DIR / netns)


def owned_namespaces(prefix: str) -> list[str]:
    """The names under /run/netns that start with ``prefix``."""
    try:
        return sorted(name for name in os.listdir(NETNS_DIR) if name.startswith(prefix))
    except FileNotFoundError:
        return []


def read(netns: str, bridge_port: str | None = None) -> ActualSide:
    """What ``netns`` holds (and whether ``bridge_port`` exists here)."""
    port = bridge_port is not None and link_exists(bridge_port)
    if not exists(netns):
        return ActualSide(netns, False, port)
    with _netns(netns) as ns:
        links = {link.get("ifname"): link for link in ns.get_links()}
        names = {link["index"]: link.get("ifname") for link in links.values()}
        facts = {name: (link.get("IFLA_ADDRESS"), link.get("IFLA_MTU"),
                        bool(link["flags"] & IFF_UP), link.get("IFLA_IFALIAS") or "")
                 for name, link in links.items() if name in (INSIDE_LINK, OUTSIDE_LINK)}
        addresses = frozenset()
        if OUTSIDE_LINK in links:
            addresses = frozenset(
                ipaddress.IPv4Interface(f"{msg.get('IFA_ADDRESS')}/{msg['prefixlen']}")
                for msg in ns.get_addr(index=links[OUTSIDE_LINK]["index"],
                                       family=socket.AF_INET))
        routes = frozenset(
            (str(ipaddress.IPv4Network((msg.get("RTA_DST") or 0, msg["dst_len"]))),
             msg.get("RTA_GATEWAY"),
             names.get(msg.get("RTA_OIF"), "?"))
            for msg in ns.route("dump", family=socket.AF_INET, table=MAIN_TABLE)
            if msg.get("RTA_GATEWAY") is not None)
        neighbours = frozenset(
            (msg.get("NDA_DST"), msg.get("NDA_LLADDR"))
            for msg in ns.neigh("dump", family=socket.AF_INET)
            if msg["state"] & NUD_PERMANENT and names.get(msg["ifindex"]) == INSIDE_LINK)
    values = _run(_in(netns, "cat", *(f"/proc/sys/net/{key}" for key in SYSCTLS),
                      CONNTRACK_COUNT), check=False).stdout.split()
    sysctls = dict(zip(SYSCTLS, values, strict=False))
    translations = int(values[len(SYSCTLS)]) if len(values) > len(SYSCTLS) else None
    listed = _run(_in(netns, "nft", "list", "table", "ip", NFT_TABLE), check=False)
    digest = external.ruleset_digest(listed.stdout) if listed.returncode == 0 else None
    return ActualSide(netns, True, port, facts.get(INSIDE_LINK), facts.get(OUTSIDE_LINK),
                      addresses, routes, neighbours, sysctls, digest, translations)


def link_exists(name: str) -> bool:
    """Whether a link ``name`` exists in this network namespace."""
    with _ipr() as ipr:
        return bool(ipr.link_lookup(ifname=name))


def master_of(name: str) -> str | None:
    """The name of the device ``name`` is enslaved to (a bridge, a bond), or None."""
    with _ipr() as ipr:
        found = ipr.link_lookup(ifname=name)
        master = ipr.get_links(found[0])[0].get("IFLA_MASTER") if found else None
        if not master:
            return None
        return ipr.get_links(master)[0].get("IFLA_IFNAME")


# --- changes ---------------------------------------------------------------------------


def create(side: ExternalSide) -> None:
    """Make ``side``'s namespace from nothing: the namespace, its links, then ``converge``.
    Raises SystemFailure (with what is made left for the next run or ``remove``)."""
    if not exists(side.netns):
        prefix = _machine_mount_ns()
        stale = NETNS_DIR / side.netns
        if stale.is_file() and stale.stat().st_size == 0:
            stale.unlink()  # our name, left by a mount that vanished (see _machine_mount_ns)
        _run([*prefix, "ip", "netns", "add", side.netns])
    with _netns(side.netns) as ns:
        ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
    make_links(side)
    write_sysctls(side)
    converge(side, read(side.netns, side.bridge_port))


def make_links(side: ExternalSide) -> None:
    """The veth (bridge port here, int0 inside) and the macvlan ext0 on the NIC (made
    inside the namespace directly), with their MACs, MTUs and marks, up; a link of the
    namespace that is not as wanted is made again."""
    with _ipr() as ipr:
        nic = ipr.link_lookup(ifname=side.nic)
        if not nic:
            raise SystemFailure(f"routing domain {side.domain}: the external NIC {side.nic} "
                                "does not exist on this host")
        with _netns(side.netns) as ns:
            for name in (INSIDE_LINK, OUTSIDE_LINK):
                for index in ns.link_lookup(ifname=name):
                    ns.link("del", index=index)
        for index in ipr.link_lookup(ifname=side.bridge_port):
            ipr.link("del", index=index)
        ipr.link("add", ifname=side.bridge_port, kind="veth", mtu=side.mtu,
                 peer={"ifname": INSIDE_LINK, "net_ns_fd": side.netns})
        ipr.link("add", ifname=OUTSIDE_LINK, kind="macvlan", link=nic[0],
                 macvlan_mode="private", net_ns_fd=side.netns)
        ipr.link("set", index=ipr.link_lookup(ifname=side.bridge_port)[0], state="up")
    with _netns(side.netns) as ns:
        inside = ns.link_lookup(ifname=INSIDE_LINK)[0]
        ns.link("set", index=inside, address=side.gateway_mac, mtu=side.mtu,
                ifalias=side.marker)
        outside = ns.link_lookup(ifname=OUTSIDE_LINK)[0]
        ns.link("set", index=outside, address=side.outside_mac,
                ifalias=f"{side.marker} nic={side.nic}")
        for index in (inside, outside):
            ns.link("set", index=index, state="up")
    # The userspace datapath leaves TCP checksums to the sender's offload: off, so
    # they are complete when OVS forwards the frame (DESIGN: "TCP silently fails").
    _run(_in(side.netns, "ethtool", "-K", INSIDE_LINK, "tx", "off"))


def write_sysctls(side: ExternalSide) -> None:
    """IPv4 forwarding on, IPv6 off, inside the namespace."""
    _run(_in(side.netns, "sysctl", "-qw",
             *(f"net.{key.replace('/', '.')}={value}" for key, value in SYSCTLS.items())))


def converge(side: ExternalSide, actual: ActualSide) -> int:
    """Addresses, routes, neighbours and the ruleset of an existing namespace whose links
    are right, by difference; the number of changes made."""
    changes = 0
    with _netns(side.netns) as ns:
        outside = ns.link_lookup(ifname=OUTSIDE_LINK)[0]
        inside = ns.link_lookup(ifname=INSIDE_LINK)[0]
        # Stale routes first: deleting an address makes the kernel drop the routes
        # through it (the old default route with the old external network's address).
        index = {INSIDE_LINK: inside, OUTSIDE_LINK: outside}
        for dst, gateway, _ in sorted(actual.routes - external.wanted_routes(side), key=str):
            _tolerate_gone(lambda dst=dst, gateway=gateway: ns.route(
                "del", dst=dst, gateway=gateway, table=MAIN_TABLE))
            changes += 1
        wanted = set(side.addresses)
        for address in sorted(actual.addresses - wanted):
            _tolerate_gone(lambda address=address: ns.addr(
                "del", index=outside, address=str(address.ip),
                prefixlen=address.network.prefixlen))
            changes += 1
        for address in side.addresses:
            if address not in actual.addresses:
                ns.addr("add", index=outside, address=str(address.ip),
                        prefixlen=address.network.prefixlen)
                changes += 1
        wanted_neigh = external.wanted_neighbours(side)
        for dst, _ in actual.neighbours - wanted_neigh:
            ns.neigh("del", dst=dst, ifindex=inside)
            changes += 1
        for dst, mac in sorted(wanted_neigh - actual.neighbours):
            ns.neigh("replace", dst=dst, lladdr=mac, ifindex=inside, state=NUD_PERMANENT)
            changes += 1
        for dst, gateway, link in sorted(external.wanted_routes(side) - actual.routes, key=str):
            # The next hop of a tenant prefix is on int0 whatever its addresses (none).
            ns.route("replace", dst=dst, gateway=gateway, oif=index[link], table=MAIN_TABLE,
                     **({"flags": RTNH_F_ONLINK} if link == INSIDE_LINK else {}))
            changes += 1
    if actual.ruleset_digest != external.ruleset_digest(side.ruleset):
        install_ruleset(side)
        changes += 1
    return changes


def install_ruleset(side: ExternalSide) -> None:
    """Replace the namespace's table with ``side.ruleset`` (one nft transaction), then
    once more with the digest of nft's own listing of it in the table's comment, so
    that ``read`` sees any rule changed by hand as drift (external.ruleset_digest)."""
    _run(_in(side.netns, "nft", "-f", "-"), stdin=side.ruleset)
    listing = _run(_in(side.netns, "nft", "list", "table", "ip", NFT_TABLE)).stdout
    _run(_in(side.netns, "nft", "-f", "-"), stdin=external.with_listing(side.ruleset, listing))


def _tolerate_gone(delete: Any) -> None:
    """Run ``delete`` (a netlink deletion); an object the kernel removed already (ESRCH,
    EADDRNOTAVAIL: gone with an address or link deleted before it) is no error."""
    try:
        delete()
    except Exception as exc:  # noqa: BLE001 - pyroute2's NetlinkError, re-raised unless gone
        if getattr(exc, "code", None) not in (errno.ESRCH, errno.EADDRNOTAVAIL):
            raise


def remove(netns: str, bridge_port: str | None) -> None:
    """Delete ``netns`` with everything in it (its links first, so that a process still
    inside cannot keep them, nor the veth's end on the bridge, alive), and wait until
    the bridge port is gone."""
    if exists(netns):
        prefix = _machine_mount_ns()  # raises before anything is deleted
        with _netns(netns) as ns:
            for name in (INSIDE_LINK, OUTSIDE_LINK):
                for index in ns.link_lookup(ifname=name):
                    ns.link("del", index=index)
        _run(_in(netns, "nft", "flush", "ruleset"), check=False)
        _run([*prefix, "ip", "netns", "delete", netns])
    if bridge_port is not None:
        _wait_gone([bridge_port])


def _wait_gone(names: Iterable[str], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    with _ipr() as ipr:
        for name in names:
            while ipr.link_lookup(ifname=name):
                if time.monotonic() > deadline:
                    raise SystemFailure(f"{name} is still there {timeout:g} s after its "
                                        "namespace was deleted")
                time.sleep(0.05)
