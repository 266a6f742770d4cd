from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import spawncheck  # noqa: E402
from fabrics import TWO_HOSTS  # noqa: E402
from ovsenv import Namespace, Switch, netns_missing, ovs_missing, veth  # noqa: E402

from ovsnvgre.lab.check import tcp_echo  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def private_fabric_cache(tmp_path_factory) -> Iterator[None]:
    """Fabric caches of the tests (and the commands they run) stay in the test's tmp dir."""
    previous = os.environ.get("OVSNVGRE_CACHE_DIR")
    os.environ["OVSNVGRE_CACHE_DIR"] = str(tmp_path_factory.mktemp("fabric-cache"))
    yield
    if previous is None:
        del os.environ["OVSNVGRE_CACHE_DIR"]
    else:
        os.environ["OVSNVGRE_CACHE_DIR"] = previous


# Every process a test starts runs the environment under test (spawncheck.py): the
# hook refuses a `python3` or `ovsnvgre` from PATH before it starts.
sys.addaudithook(spawncheck.audit)


def needs_switch() -> None:
    """Skip with the reason when switches or namespaces cannot run here; fail in CI."""
    reason = netns_missing() or ovs_missing()
    if reason and os.environ.get("CI"):
        pytest.fail(f"CI must run every test, but: {reason}")
    if reason:
        pytest.skip(reason)


@dataclass
class Host:
    """One fabric host: a namespace, its own switch, an uplink to the router."""

    name: str
    netns: Namespace
    switch: Switch
    fabric: Path
    vm_ports: list[str] = field(default_factory=list)

    def ovsnvgre(self, *args: str, fabric: Path | None = None, host: str | None = "default"):
        extra = ["-c", str(fabric or self.fabric)]
        if host == "default":
            extra += ["--host", self.name]
        elif host is not None:
            extra += ["--host", host]
        return self.switch.ovsnvgre(*args, *extra)

    def ip(self, *args: str) -> str:
        return self.netns.exec("ip", *args).stdout

    def ping(self, address: str, count: int = 1) -> bool:
        result = self.netns.exec("ping", "-c", str(count), "-W", "2", "-i", "0.2", address,
                                 check=False)
        return result.returncode == 0


@dataclass
class Vm:
    netns: Namespace
    mac: str
    ca: str

    def ping(self, address: str, count: int = 3, source: str | None = None) -> bool:
        # Several echoes: the first one across a new tunnel can go while the
        # switch still resolves the underlay next hop.  Any reply is success.
        extra = ["-I", source] if source else []
        result = self.netns.exec("ping", "-c", str(count), "-W", "2", "-i", "0.2", *extra,
                                 address, check=False)
        return result.returncode == 0

    def tcp(self, other: Vm, port: int = 5201) -> bool:
        """One TCP connection from this VM to ``other`` carrying 64 KiB, echoed back."""
        return tcp_echo(self.netns.name, other.netns.name, other.ca, port)


class Lab:
    """A router namespace between the two hosts' PA subnets, as in the HNV walkthrough."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.namespaces: list[Namespace] = []
        self.switches: list[Switch] = []
        self.fabric = tmp_path / "fabric.yaml"
        self.fabric.write_text(TWO_HOSTS)

    def start(self) -> None:
        self.router = self._namespace("r")
        self.router.exec("sysctl", "-qw", "net.ipv4.ip_forward=1")

    def _namespace(self, tag: str) -> Namespace:
        ns = Namespace(tag)
        self.namespaces.append(ns)
        return ns

    def host(self, name: str, pa: str, gateway: str, vm_ports: tuple[str, ...] = ("vnet0",
                                                                                "vnet1"),
             start: bool = True) -> Host:
        ns = self._namespace(name[-2:])
        router_side = f"r-{name}"[-15:]
        veth(ns, "eth1", self.router, router_side)
        self.router.exec("ip", "addr", "add", f"{gateway}/24", "dev", router_side)
        # The PA starts on the uplink NIC, as on a real machine.
        ns.exec("ip", "addr", "add", pa, "dev", "eth1")
        ns.exec("ip", "route", "add", "default", "via", gateway, "proto", "boot")
        for index, port in enumerate(vm_ports):
            ns.exec("ip", "link", "add", port, "type", "veth", "peer", "name", f"vm{index}")
            ns.exec("ip", "link", "set", port, "up")
        switch = Switch(ns)
        self.switches.append(switch)
        if start:
            switch.start()
        return Host(name, ns, switch, self.fabric, list(vm_ports))

    def vm(self, host: Host, port: str, mac: str, ca: str, mtu: int = 1400) -> Vm:
        """A VM: a namespace holding the far end of the host's veth for ``port``."""
        ns = self._namespace("v")
        peer = f"vm{host.vm_ports.index(port)}"
        host.netns.exec("ip", "link", "set", peer, "netns", ns.name)
        ns.exec("ip", "link", "set", peer, "name", "eth0")
        ns.exec("ip", "link", "set", "eth0", "address", mac, "mtu", str(mtu))
        ns.exec("ip", "addr", "add", ca, "dev", "eth0")
        ns.exec("ip", "link", "set", "eth0", "up")
        # With transmit checksum offload on, the userspace datapath sends TCP
        # segments with unfinished checksums: ping works and TCP silently fails.
        ns.exec("ethtool", "-K", "eth0", "tx", "off")
        return Vm(ns, mac, ca.split("/")[0])

    def replug(self, host: Host, port: str, vm: Vm, mtu: int = 1400) -> None:
        """A VM restart with a fixed device name: the host's ``port`` device is deleted
        (its VM end goes with it) and made again under the same name, the new VM end
        configured as before (its CA a /24, as in the tests' fabrics).  ovs-vswitchd is
        not told."""
        host.netns.exec("ip", "link", "delete", port)
        peer = f"vm{host.vm_ports.index(port)}"
        host.netns.exec("ip", "link", "add", port, "type", "veth", "peer", "name", peer)
        host.netns.exec("ip", "link", "set", port, "up")
        host.netns.exec("ip", "link", "set", peer, "netns", vm.netns.name)
        vm.netns.exec("ip", "link", "set", peer, "name", "eth0")
        vm.netns.exec("ip", "link", "set", "eth0", "address", vm.mac, "mtu", str(mtu))
        vm.netns.exec("ip", "addr", "add", f"{vm.ca}/24", "dev", "eth0")
        vm.netns.exec("ip", "link", "set", "eth0", "up")
        vm.netns.exec("ethtool", "-K", "eth0", "tx", "off")

    def close(self) -> None:
        for switch in self.switches:
            switch.close()
        for ns in self.namespaces:
            ns.delete()


@contextlib.contextmanager
def running_lab(path: Path) -> Iterator[Lab]:
    needs_switch()
    the_lab = Lab(path)
    try:
        the_lab.start()
        yield the_lab
    finally:
        the_lab.close()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with running_lab(tmp_path) as the_lab:
        yield the_lab


@pytest.fixture
def host1(lab: Lab) -> Host:
    return lab.host("host1", "198.51.100.11/24", "198.51.100.1")


@pytest.fixture
def host2(lab: Lab) -> Host:
    return lab.host("host2", "203.0.113.11/24", "203.0.113.1")
