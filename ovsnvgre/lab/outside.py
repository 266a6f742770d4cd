"""The lab's outside world for external gateways (issue 19), and its check.

A fabric whose routing domains have ``external`` gets one more namespace,
``<prefix>-outside``: for each gateway host's external NIC a veth (the NIC in the host's
namespace, ``x<n>`` outside) with each external network's next hop (203.0.113.1 in
examples/gateway.yaml), and a server (``server_address``: 203.0.113.100) that answers
ping, a TCP echo and a UDP "who am I" (the address and port it saw).  Only the lab's own
namespaces and the fabric's documentation-range addresses are ever used.

The check proves, from the fabric: each VM of such a domain reaches the server (ping,
TCP) and is seen there as its domain's SNAT address or its floating IP; VMs of two
domains with the same CA, sending from the same port at the same time, are seen as
their own domain's addresses and each gets its own answer; the outside reaches each
floating IP (ping, TCP), and no CA, even when it routes the tenants' prefixes to the
SNAT addresses.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from ovsnvgre.lab import proc
from ovsnvgre.lab.check import tcp_echo
from ovsnvgre.lab.topology import Topology
from ovsnvgre.model import External, Fabric, Vm

SERVER_HOST = 100  # the server's host number in each external network
PORT = 7000

# Answers each UDP datagram and TCP connection with the address and port it came from;
# with a third argument, also echoes every TCP connection on that port (the outside
# `lab guests` keeps serving on a real gateway host, outsidehost.py).
WHOAMI = r"""
import socket, sys, threading
address, port = sys.argv[1], int(sys.argv[2])
def pump(conn):
    conn.settimeout(20)
    try:
        while data := conn.recv(65536):
            conn.sendall(data)
    except OSError:
        pass
    conn.close()
def serve_echo(echo):
    while True:
        threading.Thread(target=pump, args=(echo.accept()[0],), daemon=True).start()
if len(sys.argv) > 3:
    echo = socket.socket()
    echo.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    echo.bind((address, int(sys.argv[3])))
    echo.listen(16)
    threading.Thread(target=serve_echo, args=(echo,), daemon=True).start()
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind((address, port))
tcp = socket.socket()
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind((address, port))
tcp.listen(16)
def serve_tcp():
    while True:
        conn, peer = tcp.accept()
        conn.sendall(f"{peer[0]}:{peer[1]}".encode())
        conn.close()
threading.Thread(target=serve_tcp, daemon=True).start()
print("listening", flush=True)
while True:
    data, peer = udp.recvfrom(100)
    print(f"{peer[0]}:{peer[1]}", flush=True)
    udp.sendto(f"{peer[0]}:{peer[1]}".encode(), peer)
"""
# One UDP datagram or TCP connection from source port sport; prints the answer or nothing.
ASK = r"""
import socket, sys
proto, address, port, sport, tries = sys.argv[1], sys.argv[2], int(sys.argv[3]), \
    int(sys.argv[4]), int(sys.argv[5])
for _ in range(tries):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", sport))
    s.settimeout(2 if tries > 1 else 0.5)
    try:
        if proto == "udp":
            s.sendto(b"?", (address, port))
        else:
            s.connect((address, port))
        print(s.recv(100).decode())
        break
    except OSError:
        pass
    finally:
        s.close()
"""


def netns(topology: Topology) -> str:
    """The outside's namespace."""
    return f"{topology.prefix}-outside"


def gateways(fabric: Fabric) -> dict[tuple[str, str], External]:
    """Each (gateway host, NIC) with one external section on it (the first in the file)."""
    found: dict[tuple[str, str], External] = {}
    for domain in fabric.routing_domains.values():
        if domain.external is not None:
            found.setdefault((domain.external.host, domain.external.nic), domain.external)
    return found


def server_address(external: External) -> ipaddress.IPv4Address:
    """The outside server's address in ``external``'s network: its host number 100."""
    return external.address.network.network_address + SERVER_HOST


def build(fabric: Fabric, topology: Topology, claim: Callable[[list[str]], set[str]]
          ) -> list[str]:
    """Make the outside (or converge it); ``claim`` records namespaces before they are made
    and returns those that exist (builder's).  Returns the namespaces it holds."""
    sides = gateways(fabric)
    if not sides:
        return []
    outside = netns(topology)
    existing = claim([outside])
    if outside not in existing:
        proc.run("ip", "netns", "add", outside)
        proc.run("ip", "-n", outside, "link", "set", "lo", "up")
    hosts = {host.name: host for host in topology.hosts}
    for index, ((host, nic), external) in enumerate(sorted(sides.items())):
        port = f"x{index}"
        if not proc.link_exists(outside, port):
            proc.run("ip", "-n", hosts[host].netns, "link", "add", nic, "type", "veth", "peer",
                     "name", port, "netns", outside)
            proc.run("ip", "-n", hosts[host].netns, "link", "set", nic, "up")
            # The userspace datapath is not on this path, but the namespaces' NAT is:
            # complete checksums keep every hop honest.
            proc.run("ethtool", "-K", port, "tx", "off", netns=outside)
            proc.run("ip", "-n", outside, "link", "set", port, "up")
        router = f"{external.gateway}/{external.address.network.prefixlen}"
        proc.run("ip", "-n", outside, "addr", "replace", router, "dev", port)
        proc.run("ip", "-n", outside, "addr", "replace", f"{server_address(external)}/32",
                 "dev", "lo")
    # The way out of a VM of a domain with a gateway: its subnet's gateway (the
    # distributed router), as a routed subnet's VMs have in the lab anyway.
    labs = {vm.name: vm for vm in topology.vms}
    for domain in fabric.routing_domains.values():
        for vm in fabric.vms_in_domain(domain.name) if domain.external else ():
            gateway = fabric.virtual_subnets[vm.virtual_subnet].gateway
            if vm.name in labs and gateway is not None:
                proc.run("ip", "-n", labs[vm.name].netns, "route", "replace", "default", "via",
                         str(gateway))
    return [outside]


def way_out(result: OutsideResult, namespace: str, vm: str, external: External, server: str,
            echo: Callable[[], bool]) -> None:
    """VM ``vm`` (its namespace ``namespace``) reaches the outside ``server``: ping, UDP
    and TCP seen there as its floating IP or its domain's SNAT address, and ``echo`` (64
    KiB over TCP, True when it came back whole)."""
    seen_as = str(external.floating_ips.get(vm, external.address.ip))
    ping = proc.run("ping", "-c", "2", "-i", "0.2", "-W", "2", server,
                    netns=namespace, check=False).returncode == 0
    result.expect(ping, f"{vm} pings the outside server {server}")
    who = ask(namespace, "udp", server, 40000).split(":")[0]
    result.expect(who == seen_as, f"{vm} reaches {server} over UDP seen as "
                  f"{seen_as} ({who or 'no answer'})")
    who = ask(namespace, "tcp", server, 40001).split(":")[0]
    result.expect(who == seen_as, f"{vm} reaches {server} over TCP seen as "
                  f"{seen_as} ({who or 'no answer'})")
    result.expect(echo(), f"{vm}: 64 KiB echoed by {server} over TCP")


@dataclass
class OutsideResult:
    """What the outside check saw: one line per finding, and the failures among them."""

    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether everything was as the fabric says."""
        return not self.failures

    def expect(self, ok: bool, text: str) -> None:
        """Record one finding."""
        self.lines.append(f"{'ok' if ok else 'FAILED'}  {text}")
        if not ok:
            self.failures.append(text)

    def as_dict(self) -> dict:
        """JSON-ready (`lab check --json`'s ``external``)."""
        return {**asdict(self), "ok": self.ok}


def ask(namespace: str, proto: str, address: str, sport: int, tries: int = 3) -> str:
    """One UDP datagram or TCP connection from ``namespace`` (source port ``sport``) to the
    whoami service at ``address``; what it answered (``address:port`` it saw) or ""."""
    return proc.run(sys.executable, "-I", "-c", ASK, proto, address, str(PORT), str(sport),
                    str(tries), netns=namespace, check=False, timeout=30, cwd="/").stdout.strip()


def _listen(namespace: str, address: str) -> subprocess.Popen:
    server = subprocess.Popen(  # noqa: S603 - a fixed argv, no shell
        ["ip", "netns", "exec", namespace, sys.executable, "-I", "-c", WHOAMI, address,  # noqa: S607 - iproute2 from PATH, as the lab runs it
         str(PORT)], cwd="/", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert server.stdout is not None  # noqa: S101 - an invariant of Popen with PIPE
    server.stdout.readline()
    return server


def check(fabric: Fabric, topology: Topology) -> OutsideResult:
    """The outside's check (see the module docstring)."""
    result = OutsideResult()
    outside = netns(topology)
    labs = {vm.name: vm for vm in topology.vms}
    by_domain = {name: [vm for vm in fabric.vms_in_domain(name) if vm.name in labs]
                 for name, domain in fabric.routing_domains.items() if domain.external}
    for name, vms in by_domain.items():
        external = fabric.routing_domains[name].external
        assert external is not None  # noqa: S101 - by_domain holds only those
        server = str(server_address(external))
        listener = _listen(outside, server)
        try:
            for vm in vms:
                namespace = labs[vm.name].netns
                way_out(result, namespace, vm.name, external, server,
                        lambda ns=namespace, to=server: tcp_echo(ns, outside, to, PORT + 2))
        finally:
            listener.kill()
            listener.wait()
    _tenants_apart(fabric, by_domain, labs, outside, result)
    from_outside(fabric, by_domain, labs, outside, result)
    return result


def _tenants_apart(fabric: Fabric, by_domain: dict[str, list[Vm]], labs: dict, outside: str,
                   result: OutsideResult) -> None:
    """VMs of two domains with the same CA, the same source port, at the same time."""
    pairs = [(a, b) for name_a, vms_a in by_domain.items() for name_b, vms_b in by_domain.items()
             if name_a < name_b for a in vms_a for b in vms_b if a.ca.ip == b.ca.ip]
    for index, (a, b) in enumerate(pairs):
        ext_a, ext_b = (fabric.routing_domains[fabric.routing_domain_of(vm) or ""].external
                        for vm in (a, b))
        assert ext_a is not None and ext_b is not None  # noqa: S101 - by_domain's
        server = str(server_address(ext_a))
        listener = _listen(outside, server)
        try:
            with ThreadPoolExecutor(2) as pool:
                answers = list(pool.map(ask, [labs[a.name].netns, labs[b.name].netns],
                                        ["udp"] * 2, [server] * 2, [41000 + index] * 2))
        finally:
            listener.kill()
            listener.wait()
        for vm, answer, external in ((a, answers[0], ext_a), (b, answers[1], ext_b)):
            seen_as = str(external.floating_ips.get(vm.name, external.address.ip))
            result.expect(answer.startswith(f"{seen_as}:"),
                          f"{a.name} and {b.name} ({a.ca.ip} both) at once: {vm.name} seen as "
                          f"{seen_as}, its answer back to it ({answer or 'no answer'})")


def from_outside(fabric: Fabric, by_domain: dict[str, list[Vm]], labs: dict, outside: str,
                 result: OutsideResult, local: Collection[str] | None = None) -> None:
    """Floating IPs answer from outside (ping; TCP too where the VM is ``local``: None,
    every VM); no CA of ``by_domain`` does, even routed to a SNAT address."""
    for name, vms in by_domain.items():
        external = fabric.routing_domains[name].external
        assert external is not None  # noqa: S101 - by_domain's
        for vm_name, address in external.floating_ips.items():
            if vm_name not in labs:
                continue
            ping = proc.run("ping", "-c", "2", "-i", "0.2", "-W", "2", str(address),
                            netns=outside, check=False).returncode == 0
            result.expect(ping, f"the outside pings {vm_name} at its floating IP {address}")
            if local is not None and vm_name not in local:
                continue
            tcp = _tcp_to(outside, labs[vm_name].netns, str(address))
            result.expect(tcp, f"the outside reaches {vm_name} over TCP at {address}")
        for vm in vms:
            proc.run("ip", "-n", outside, "route", "replace", str(vm.ca.network), "via",
                     str(external.address.ip), check=False)
            answered = proc.run("ping", "-c", "1", "-W", "1", str(vm.ca.ip), netns=outside,
                                check=False).returncode == 0
            result.expect(not answered, f"the outside, routing {vm.ca.network} to "
                          f"{external.address.ip}, does not reach {vm.name} at {vm.ca.ip}")
            proc.run("ip", "-n", outside, "route", "del", str(vm.ca.network), check=False)


def _tcp_to(outside: str, vm_netns: str, address: str) -> bool:
    """A TCP connection from the outside to ``address`` (a floating IP), answered by a
    listener on every address of the VM."""
    listener = _listen(vm_netns, "0.0.0.0")  # noqa: S104 - inside the lab's VM namespace
    try:
        return bool(ask(outside, "tcp", address, 42000))
    finally:
        listener.kill()
        listener.wait()
