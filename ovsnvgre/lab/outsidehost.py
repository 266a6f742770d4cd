"""The lab's outside on a real gateway host (the Vagrant lab's host2), and its check.

On a test host that is a routing domain's gateway host but has no such external NIC
(the Vagrant lab's host2 has no ``eth2``), `lab guests` makes the outside that `lab up`
makes in the namespaces lab (outside.py): the namespace ``<prefix>-outside`` behind a
veth whose end on this host is the fabric's NIC (its alias marks it as the lab's), the
external network's next hop (203.0.113.1) and its server (203.0.113.100).  The server
keeps running (outside.WHOAMI with its TCP echo, pid in the lab's directory; started from
a systemd unit, in a scope of its own, apart from that unit's processes), so that
`lab check --host` on the *other* hosts finds it too: their VMs reach it through the
tunnel to the gateway host.  A NIC that exists and is not the lab's is a real external
network: nothing is made for it.

`lab check --host` proves from each host: every local VM of a domain with a gateway
reaches the server (ping, UDP, TCP seen as its domain's SNAT address or its floating
IP, 64 KiB echoed), and, on the host with the lab's outside, the outside reaches each
floating IP (ping; TCP for a VM on this host) and no CA of the domain (even routed to
the SNAT address).  Two tenants with the same CA at once are the namespaces lab's check.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ovsnvgre.errors import SystemFailure
from ovsnvgre.lab import outside, proc
from ovsnvgre.lab.builder import lab_dir, recorded
from ovsnvgre.lab.check import TCP_CLIENT
from ovsnvgre.lab.outside import PORT, OutsideResult
from ovsnvgre.lab.topology import Topology
from ovsnvgre.model import External, Fabric

ECHO_PORT = PORT + 2


def alias(topology: Topology) -> str:
    """The alias that marks an external NIC as the lab's veth into its outside."""
    return f"ovsnvgre-lab {topology.prefix} outside"


def _alias_of(nic: str) -> str | None:
    """``nic``'s alias in this network namespace, "" without one; None: no such link.
    (Read by netlink through `ip`: /sys/class/net may be another namespace's.)"""
    result = proc.run("ip", "-j", "link", "show", "dev", nic, check=False)
    if result.returncode != 0:
        return None
    links = json.loads(result.stdout or "[]")
    return str(links[0].get("ifalias", "")) if links else None


def sides(fabric: Fabric, topology: Topology, host: str) -> dict[str, External]:
    """The external NICs of ``host`` the lab plays the outside for (NIC -> its first
    external section): those that do not exist here, or that are the lab's veth."""
    mine = alias(topology)
    return {nic: external for (gateway, nic), external in sorted(outside.gateways(fabric).items())
            if gateway == host and _alias_of(nic) in (None, mine)}


def build(fabric: Fabric, topology: Topology, host: str,
          claim: Callable[[list[str]], set[str]]) -> list[str]:
    """Make (or converge) the outside of ``host``'s external NICs here, and start its
    servers; ``claim`` records the namespace before it is made (builder's).  Returns one
    line per external network.  Raises SystemFailure (a command failed, a server did not
    start)."""
    wanted = sides(fabric, topology, host)
    if not wanted:
        return []
    namespace = outside.netns(topology)
    if namespace not in claim([namespace]):
        proc.run("ip", "netns", "add", namespace)
        proc.run("ip", "-n", namespace, "link", "set", "lo", "up")
    lines = []
    for index, (nic, external) in enumerate(wanted.items()):
        port = f"x{index}"
        if not proc.link_exists(namespace, port):
            if _alias_of(nic) is not None:  # the lab's veth, its outside end gone
                proc.run("ip", "link", "del", "dev", nic)
            proc.run("ip", "link", "add", nic, "type", "veth", "peer", "name", port,
                     "netns", namespace)
            proc.run("ip", "link", "set", "dev", nic, "alias", alias(topology))
            proc.run("ip", "link", "set", "dev", nic, "up")
            # Complete checksums on the outside's side: the NAT rewrites each packet.
            proc.run("ethtool", "-K", port, "tx", "off", netns=namespace)
            proc.run("ip", "-n", namespace, "link", "set", port, "up")
        router = f"{external.gateway}/{external.address.network.prefixlen}"
        proc.run("ip", "-n", namespace, "addr", "replace", router, "dev", port)
        server = str(outside.server_address(external))
        proc.run("ip", "-n", namespace, "addr", "replace", f"{server}/32", "dev", "lo")
        pid = _serve(topology, namespace, server)
        lines.append(f"outside: namespace {namespace} behind {nic}, router {external.gateway}, "
                     f"server {server} (pid {pid}: ping, whoami on UDP/TCP {PORT}, TCP echo "
                     f"{ECHO_PORT})")
    return lines


def _pidfile(topology: Topology, server: str) -> Path:
    return lab_dir(topology.prefix) / "outside" / f"server-{server}.pid"


def _serving(pidfile: Path) -> int | None:
    """The pid of the server ``pidfile`` names if it still runs (not a reused pid)."""
    try:
        pid = int(pidfile.read_text().strip())
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if outside.WHOAMI.encode() in command else None


def _serve(topology: Topology, namespace: str, server: str) -> int:
    """Start the outside's server at ``server`` unless it runs; its pid."""
    pidfile = _pidfile(topology, server)
    pid = _serving(pidfile)
    if pid is not None:
        return pid
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    log = pidfile.with_suffix(".log")
    argv = ["ip", "netns", "exec", namespace, sys.executable, "-I", "-c", outside.WHOAMI,
            server, str(PORT), str(ECHO_PORT)]
    if os.environ.get("INVOCATION_ID") and shutil.which("systemd-run"):
        # Run from a systemd unit (the Vagrant guests' boot unit runs `lab guests`): a
        # scope of its own, or the unit's cgroup holds it and systemd kills it with the
        # unit's processes (when its `up` fails, or the unit stops). systemd-run --scope
        # execs the command, so the pid stays the server's.
        argv = ["systemd-run", "--scope", "--quiet", "--collect",
                f"--unit=ovsnvgre-lab-{topology.prefix}-outside-{server}", *argv]
    with log.open("w") as output:
        # Its own session, detached from this command: it outlives `lab guests`.
        process = subprocess.Popen(  # noqa: S603 - a fixed argv, no shell
            argv, cwd="/", stdin=subprocess.DEVNULL,
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    pidfile.write_text(f"{process.pid}\n")
    deadline = time.monotonic() + 20
    while "listening" not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            said = (log.read_text().strip().splitlines() or ["no output"])[-1]
            raise SystemFailure(f"the outside's server at {server} did not start: {said}")
        time.sleep(0.05)
    return process.pid


def stop(topology: Topology) -> list[str]:
    """Stop the outside's servers by pid; what was stopped."""
    stopped = []
    for pidfile in sorted((lab_dir(topology.prefix) / "outside").glob("server-*.pid")):
        pid = _serving(pidfile)
        if pid is not None:
            proc.stop(pid)
            stopped.append(f"outside server {pid}")
    return stopped


def _echo(namespace: str, server: str) -> bool:
    """64 KiB from ``namespace`` to the outside's TCP echo and back, compared."""
    result = proc.run(sys.executable, "-I", "-c", TCP_CLIENT, server, str(ECHO_PORT),
                      netns=namespace, check=False, timeout=30, cwd="/")
    return result.returncode == 0 and result.stdout.strip() == "ok"


def check(fabric: Fabric, topology: Topology, host: str) -> OutsideResult | None:
    """The external gateways seen from ``host`` (see the module docstring); None when
    there is nothing to check from here."""
    result = OutsideResult()
    labs = {vm.name: vm for vm in topology.vms}
    local = {vm.name for vm in topology.vms if vm.host == host}
    for name, domain in fabric.routing_domains.items():
        external = domain.external
        if external is None:
            continue
        server = str(outside.server_address(external))
        for vm in fabric.vms_in_domain(name):
            if vm.name in local:
                namespace = labs[vm.name].netns
                outside.way_out(result, namespace, vm.name, external, server,
                                lambda ns=namespace, to=server: _echo(ns, to))
    namespace = outside.netns(topology)
    if namespace in proc.namespaces() and namespace in recorded(topology.prefix):
        here = sides(fabric, topology, host)
        by_domain = {name: [vm for vm in fabric.vms_in_domain(name) if vm.name in labs]
                     for name, domain in fabric.routing_domains.items()
                     if domain.external is not None and domain.external.host == host
                     and domain.external.nic in here}
        outside.from_outside(fabric, by_domain, labs, namespace, result, local)
    return result if result.lines else None
