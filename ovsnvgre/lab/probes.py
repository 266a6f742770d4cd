"""The packets `lab check` sends from inside the VMs' namespaces: ping, whoami, TCP echo.

Every VM the check runs on gets a small TCP service (``WHOAMI_SERVER``) that tells its
name and then echoes what it receives: a routed reply carries the router's MAC, not
the answering VM's, so the name is how the check tells *who* answered an address
(with overlapping prefixes, 10.1.2.21 is a different VM in each routing domain).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ovsnvgre.lab import proc
from ovsnvgre.lab.topology import VM_IFNAME, LabVm

WHOAMI_PORT = 5209

# Isolated (-I) and from /: `-c` would otherwise put the working directory first on
# sys.path, and a socket.py there would run as root.
WHOAMI_SERVER = """
import socket, socketserver, sys
class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.settimeout(10)
        self.request.sendall(sys.argv[1].encode() + b"\\n")
        while True:
            data = self.request.recv(65536)
            if not data:
                break
            self.request.sendall(data)
def serve(family, address):
    class Server(socketserver.ThreadingTCPServer):
        address_family = family
        allow_reuse_address = True
        daemon_threads = True
        def server_bind(self):
            if family == socket.AF_INET6:  # one socket for both families
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            super().server_bind()
    return Server((address, int(sys.argv[2])), Handler)
try:
    server = serve(socket.AF_INET6, "::")
except OSError:  # IPv6 disabled in this namespace
    server = serve(socket.AF_INET, "0.0.0.0")
print("listening", flush=True)
server.serve_forever()
"""

WHOAMI_CLIENT = """
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
payload = bytes(range(256)) * 256
def ask(item):
    address, echo = item
    try:
        with socket.create_connection((address, int(sys.argv[1])), timeout=2) as s:
            s.settimeout(5)
            stream = s.makefile("rb")
            name = stream.readline().decode().strip() or None
            if not echo:
                return address, {"name": name, "echo": None}
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            return address, {"name": name, "echo": stream.read(len(payload)) == payload}
    except OSError:
        return address, {"name": None, "echo": False if echo else None}
items = json.loads(sys.argv[2])
with ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
    print(json.dumps(dict(pool.map(ask, items))))
"""


class WhoamiServers:
    """One whoami service per VM (started together, stopped by pid); a context manager."""

    def __init__(self, vms: list[LabVm], port: int = WHOAMI_PORT) -> None:
        self.vms, self.port = vms, port
        self.processes: list[subprocess.Popen] = []

    def __enter__(self) -> WhoamiServers:
        for vm in self.vms:
            self.processes.append(subprocess.Popen(  # noqa: S603 - a fixed argv, no shell, no user-supplied program
                ["ip", "netns", "exec", vm.netns, sys.executable, "-I", "-c",  # noqa: S607 - iproute2 is found on PATH, as OVS's own scripts find it
                 WHOAMI_SERVER, vm.name, str(self.port)], cwd="/", stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, text=True))
        for process in self.processes:
            assert process.stdout is not None  # noqa: S101 - an invariant the code above guarantees, not input checking
            process.stdout.readline()  # "listening": a server that failed is just not there
        return self

    def __exit__(self, *_: object) -> None:
        for process in self.processes:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class Answer:
    """What one VM saw of one address: ``replied`` to ping, each reply's TTL, the MAC of
    the address's neighbour entry (on-link answers only), the name its whoami service
    said (None: no service answered) and the TCP echo (None: not tried)."""

    replied: bool
    ttls: tuple[int, ...]
    mac: str | None
    name: str | None
    echo: bool | None


def ping(netns: str, address: str) -> tuple[bool, tuple[int, ...]]:
    """Three pings 0.2 s apart from ``netns``: whether any came back, and each reply's TTL."""
    result = proc.run("ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", address, netns=netns,
                      check=False)
    ttls = tuple(int(t) for t in re.findall(r"\bttl=(\d+)", result.stdout))
    return result.returncode == 0, ttls


def neighbours(netns: str) -> dict[str, str]:
    """The neighbour table of the VM's interface: address -> MAC (resolved entries only)."""
    table = {}
    for line in proc.run("ip", "-n", netns, "neigh", "show", "dev", VM_IFNAME,
                         check=False).stdout.splitlines():
        words = line.split()
        if words and "lladdr" in words:
            table[words[0]] = words[words.index("lladdr") + 1].lower()
    return table


def whoami(netns: str, asks: dict[str, bool], port: int = WHOAMI_PORT) -> dict[str, dict]:
    """Connect from ``netns`` to each address of ``asks`` (all at once): the name its
    whoami service says and, where ``asks`` says so, a 64 KiB TCP echo compared."""
    if not asks:
        return {}
    result = proc.run(sys.executable, "-I", "-c", WHOAMI_CLIENT, str(port),
                      json.dumps(sorted(asks.items())), netns=netns, check=False, timeout=60,
                      cwd="/")
    try:
        return json.loads(result.stdout)
    except ValueError:
        return {}


def from_vm(vm: LabVm, pings: list[str], asks: dict[str, bool]) -> dict[str, Answer]:
    """Everything one VM sees: every address of ``pings`` pinged at once, every one of
    ``asks`` asked who it is (with a TCP echo where True), then the neighbour table."""
    proc.run("ip", "-n", vm.netns, "neigh", "flush", "dev", VM_IFNAME, check=False)
    with ThreadPoolExecutor(max_workers=len(pings) + 1) as pool:
        named = pool.submit(whoami, vm.netns, asks)
        replies = dict(zip(pings, pool.map(lambda a: ping(vm.netns, a), pings), strict=True))
        names = named.result()
    table = neighbours(vm.netns)
    answers = {}
    for address in dict.fromkeys([*pings, *asks]):
        replied, ttls = replies.get(address, (False, ()))
        said = names.get(address, {})
        answers[address] = Answer(replied, ttls, table.get(address), said.get("name"),
                                  said.get("echo"))
    return answers
