"""External gateways (issue 19) with real switches and real packets: host1 with VMs of two
tenants whose CAs overlap, host3 their gateway host with a VM of its own and an `eth2` on
an outside network played by a namespace (203.0.113.1, a server at 203.0.113.100).

SNAT for TCP, UDP and ICMP from a remote host (through the tunnel) and from the gateway
host itself; a floating IP both ways; two tenants with the same CA and source port at
the same time; unsolicited inbound traffic, PAs and the gateway host's own address not
reached; `down` removes exactly what it made, and `up` again changes nothing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from conftest import Host, Lab, Vm, running_lab
from ovsenv import Namespace, sh, veth

from ovsnvgre.lab.outside import ASK, WHOAMI  # the lab's outside server and client

FABRIC = f"gw{os.getpid() % 100000}"  # the namespaces ovsnvgre-<FABRIC>-* are this run's
TEXT = f"""\
fabric: {FABRIC}
datapath_type: netdev
hosts:
  host1: {{pa: 198.51.100.11/24, uplink: eth1, gateway: 198.51.100.1}}
  host3: {{pa: 192.0.2.13/24, uplink: eth1, gateway: 192.0.2.1}}
routing_domains:
  contoso:
    external:
      host: host3
      nic: eth2
      address: 203.0.113.10/24
      gateway: 203.0.113.1
      floating_ips: {{web-a: 203.0.113.21}}
  fabrikam:
    external: {{host: host3, nic: eth2, address: 203.0.113.11/24, gateway: 203.0.113.1}}
virtual_subnets:
  web:   {{vsid: 5001, routing_domain: contoso,  prefix: 10.1.1.0/24}}
  db:    {{vsid: 5002, routing_domain: contoso,  prefix: 10.1.2.0/24}}
  front: {{vsid: 6001, routing_domain: fabrikam, prefix: 10.1.1.0/24}}
vms:
  web-a:   {{host: host1, subnet: web,   port: vnet0, mac: "02:00:00:00:51:01", ca: 10.1.1.20/24}}
  web-b:   {{host: host1, subnet: web,   port: vnet1, mac: "02:00:00:00:51:02", ca: 10.1.1.30/24}}
  front-a: {{host: host1, subnet: front, port: vnet2, mac: "02:00:00:00:61:01", ca: 10.1.1.30/24}}
  db-c:    {{host: host3, subnet: db,    port: vnet0, mac: "02:00:00:00:52:03", ca: 10.1.2.30/24}}
"""
SERVER = "203.0.113.100"

@dataclass
class World:
    lab: Lab
    host1: Host
    host3: Host
    outside: Namespace
    vms: dict[str, Vm]

    def ask(self, vm: str, proto: str, address: str = SERVER, port: int = 7000,
            sport: int = 40000) -> str:
        return sh(sys.executable, "-I", "-c", ASK, proto, address, str(port), str(sport), "3",
                  netns=self.vms[vm].netns.name, timeout=30).stdout.strip()


class Listener:
    """WHOAMI in a namespace, bound to ``address`` (0.0.0.0: any); what it received."""

    def __init__(self, netns: str, address: str = "0.0.0.0", port: int = 7000) -> None:  # noqa: S104 - inside a test namespace
        self.process = subprocess.Popen(  # noqa: S603 - a fixed argv
            ["ip", "netns", "exec", netns, sys.executable, "-I", "-c", WHOAMI, address,
             str(port)], cwd="/", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.process.stdout is not None
        assert "listening" in self.process.stdout.readline()

    def stop(self) -> list[str]:
        """Stop it; the lines it printed (one per UDP datagram received)."""
        self.process.kill()
        out, _ = self.process.communicate()
        return [line for line in out.split("\n") if line]


@pytest.fixture
def world(tmp_path, request) -> Iterator[World]:
    mode = getattr(request, "param", "per-vsid")
    with running_lab(tmp_path) as lab:
        lab.fabric.write_text(TEXT.replace("datapath_type: netdev\n", "datapath_type: netdev\n"
                                           f"overlay: {{tunnel_ports: {mode}}}\n"))
        host1 = lab.host("host1", "198.51.100.11/24", "198.51.100.1",
                         vm_ports=("vnet0", "vnet1", "vnet2"))
        host3 = lab.host("host3", "192.0.2.13/24", "192.0.2.1", vm_ports=("vnet0",))
        outside = lab._namespace("o")
        veth(host3.netns, "eth2", outside, "eth0")
        outside.exec("ip", "addr", "add", "203.0.113.1/24", "dev", "eth0")
        outside.exec("ip", "addr", "add", f"{SERVER}/32", "dev", "lo")
        outside.exec("ethtool", "-K", "eth0", "tx", "off")
        vms = {
            "web-a": lab.vm(host1, "vnet0", "02:00:00:00:51:01", "10.1.1.20/24"),
            "web-b": lab.vm(host1, "vnet1", "02:00:00:00:51:02", "10.1.1.30/24"),
            "front-a": lab.vm(host1, "vnet2", "02:00:00:00:61:01", "10.1.1.30/24"),
            "db-c": lab.vm(host3, "vnet0", "02:00:00:00:52:03", "10.1.2.30/24"),
        }
        for name, vm in vms.items():
            gateway = "10.1.2.1" if name == "db-c" else "10.1.1.1"
            vm.netns.exec("ip", "route", "add", "default", "via", gateway)
        try:
            yield World(lab, host1, host3, outside, vms)
        finally:
            # Whatever the test did: the gateway host's namespaces go (they are made in
            # the machine's mount namespace, not the lab's).
            run(host3, "down", "--no-verify")
            for name in _own_namespaces():
                sh("ip", "netns", "delete", name, check=False)


def run(host: Host, *args: str) -> subprocess.CompletedProcess:
    """``ovsnvgre ARGS -c FABRIC --host NAME`` on ``host``.  The gateway host's run enters
    only its network namespace (`nsenter --net`): under `ip netns exec`, a private mount
    namespace, the domains' namespaces would vanish with the run, and ovsnvgre refuses."""
    if host.name != "host3":
        return host.ovsnvgre(*args)
    return run_bare(host, *args, "-c", str(host.fabric), "--host", host.name)


def run_bare(host: Host, *args: str) -> subprocess.CompletedProcess:
    """``ovsnvgre ARGS`` on the gateway host as ``run`` enters it, with no fabric options
    (`rollback`, `confirm`)."""
    return sh("nsenter", f"--net=/run/netns/{host.netns.name}", "--", sys.executable, "-m",
              "ovsnvgre", *args, env=host.switch.env, check=False, timeout=120)


def _own_namespaces() -> list[str]:
    """This run's domains' namespaces on the machine (the gateway host makes them there)."""
    return sorted(n for n in os.listdir("/run/netns") if n.startswith(f"ovsnvgre-{FABRIC}-"))


def _gateway_links(host: Host) -> list[str]:
    """The domains' bridge-port veth ends on ``host``, as `ip -br link` lists them."""
    return [line for line in host.ip("-br", "link").splitlines() if line.startswith("gw")]


def up(world: World) -> None:
    for host in (world.host3, world.host1):
        result = run(host, "up")
        assert result.returncode == 0, result.stderr + result.stdout


@pytest.mark.parametrize("world", ["per-vsid", "per-peer", "flow"], indirect=True)
def test_snat_floating_ip_and_tenants_apart(world):
    up(world)
    server = Listener(world.outside.name, SERVER)
    try:
        # ICMP from a remote host through the tunnel, and from the gateway host itself.
        for name in ("web-b", "front-a", "db-c", "web-a"):
            assert world.vms[name].ping(SERVER), f"{name} cannot ping the outside server"
        # UDP and TCP: each leaves with its own domain's address (web-a with its floating IP).
        assert world.ask("web-b", "udp").startswith("203.0.113.10:")
        assert world.ask("front-a", "udp").startswith("203.0.113.11:")
        assert world.ask("db-c", "udp").startswith("203.0.113.10:")
        assert world.ask("web-a", "udp").startswith("203.0.113.21:")
        assert world.ask("web-b", "tcp").startswith("203.0.113.10:")
        assert world.ask("front-a", "tcp").startswith("203.0.113.11:")
        assert world.ask("web-a", "tcp").startswith("203.0.113.21:")
        # Two tenants, the same CA 10.1.1.30 and the same source port, at the same time:
        # each reply reaches its own tenant.
        asks = {name: subprocess.Popen(  # noqa: S603 - a fixed argv
            ["ip", "netns", "exec", world.vms[name].netns.name, sys.executable, "-I", "-c",
             ASK, "udp", SERVER, "7000", "41000", "3"], cwd="/", stdout=subprocess.PIPE, text=True)
            for name in ("web-b", "front-a")}
        answers = {name: ask.communicate(timeout=30)[0].strip() for name, ask in asks.items()}
        assert answers["web-b"] == "203.0.113.10:41000"
        assert answers["front-a"] == "203.0.113.11:41000"
    finally:
        seen = server.stop()
    assert seen, "the outside server saw nothing"
    assert all(line.split(":")[0] in ("203.0.113.10", "203.0.113.11", "203.0.113.21")
               for line in seen), seen

    # The floating IP from outside: ICMP, UDP and TCP reach web-a and come back from it.
    web_a = Listener(world.vms["web-a"].netns.name)
    try:
        assert sh("ping", "-c", "3", "-W", "2", "-i", "0.2", "203.0.113.21",
                  netns=world.outside.name, check=False).returncode == 0
        for proto in ("udp", "tcp"):
            answer = sh(sys.executable, "-I", "-c", ASK, proto, "203.0.113.21", "7000",
                        "42000", "3", netns=world.outside.name).stdout.strip()
            assert answer == "203.0.113.1:42000", answer  # no SNAT on the way in
    finally:
        assert web_a.stop()

    # Unsolicited inbound: the outside routes the tenants' prefix to their SNAT addresses
    # (and to the floating IP's), and nothing arrives at any VM.
    listeners = {name: Listener(world.vms[name].netns.name, port=7001)
                 for name in ("web-a", "web-b", "front-a")}
    try:
        for via in ("203.0.113.10", "203.0.113.11", "203.0.113.21"):
            world.outside.exec("ip", "route", "replace", "10.1.1.0/24", "via", via)
            for target in ("10.1.1.20", "10.1.1.30"):
                for proto in ("udp", "tcp"):
                    assert not sh(sys.executable, "-I", "-c", ASK, proto, target, "7001",
                                  "43000", "1", netns=world.outside.name).stdout.strip()
        for address in ("203.0.113.10", "203.0.113.11"):
            assert not sh(sys.executable, "-I", "-c", ASK, "tcp", address, "7001", "43001",
                          "1", netns=world.outside.name).stdout.strip()
    finally:
        received = {name: listener.stop() for name, listener in listeners.items()}
    assert received == {"web-a": [], "web-b": [], "front-a": []}


def test_vms_never_reach_the_provider_network(world):
    """PAs, underlay gateways and the gateway host's own address on eth2: the outside
    would answer for them (it holds them here), the VMs do not get there."""
    world.host3.netns.exec("ip", "addr", "add", "203.0.113.5/24", "dev", "eth2")
    # An address of the gateway host that is no fabric's (a management address).
    world.host3.netns.exec("ip", "addr", "add", "198.18.0.13/32", "dev", "lo")
    for address in ("192.0.2.13", "198.51.100.11", "192.0.2.1", "198.18.0.13"):
        world.outside.exec("ip", "addr", "add", f"{address}/32", "dev", "lo")
    up(world)
    assert world.vms["web-b"].ping(SERVER)
    for address in ("192.0.2.13", "198.51.100.11", "192.0.2.1", "203.0.113.5",
                    "203.0.113.11", "198.18.0.13"):
        assert not world.vms["web-b"].ping(address, count=2), address
        assert not world.vms["db-c"].ping(address, count=2), address
    assert sh("ping", "-c", "1", "-W", "2", "192.0.2.13", netns=world.outside.name,
              check=False).returncode == 0  # the outside itself holds it: the test can fail


def _host_state(host: Host) -> dict[str, str]:
    return {
        "nft": host.netns.exec("nft", "list", "ruleset").stdout,
        "iptables": host.netns.exec("iptables", "-S").stdout,
        "addresses": host.ip("-4", "-br", "addr", "show", "eth2"),
        # `up` moves the uplink's routes to the tep port: only the foreign one is compared.
        "routes": host.ip("-4", "route", "show", "198.18.0.0/24"),
    }


def test_down_removes_exactly_what_it_made_and_up_again_changes_nothing(world):
    host3 = world.host3
    # Foreign state on the gateway host, and a namespace with the fabric's prefix that
    # is no domain of it.
    host3.netns.exec("nft", "add", "table", "inet", "foreign")
    host3.netns.exec("nft", "add", "chain", "inet", "foreign", "input",
                     "{ type filter hook input priority 0; policy accept; }")
    host3.netns.exec("nft", "add", "rule", "inet", "foreign", "input", "ip", "saddr",
                     "198.18.0.1", "counter", "accept")
    host3.netns.exec("iptables", "-A", "FORWARD", "-s", "198.18.0.2", "-j", "ACCEPT")
    host3.netns.exec("ip", "addr", "add", "203.0.113.5/24", "dev", "eth2")
    host3.netns.exec("ip", "route", "add", "198.18.0.0/24", "via", "203.0.113.1")
    stranger = f"ovsnvgre-{FABRIC}-stranger"
    sh("ip", "netns", "add", stranger)
    try:
        before = _host_state(host3)
        up(world)
        namespaces = set(os.listdir("/run/netns"))
        ours = {f"ovsnvgre-{FABRIC}-contoso", f"ovsnvgre-{FABRIC}-fabrikam"}
        assert ours <= namespaces
        again = run(host3, "up")
        assert again.returncode == 0 and "no changes" in again.stdout, again.stdout
        assert world.vms["web-b"].ping(SERVER)
        ports = host3.switch.vsctl("list-ports", "br-int").split()
        assert sum(port.startswith("gw") for port in ports) == 2
        assert _host_state(host3) == before  # nothing of the host's own was touched
        down = run(host3, "down", "--no-verify")
        assert down.returncode == 0, down.stderr + down.stdout
        assert not ours & set(os.listdir("/run/netns"))
        assert stranger in os.listdir("/run/netns")
        links = host3.ip("-br", "link")
        assert " gw" not in links and not any(line.startswith("gw") for line in
                                              links.splitlines())
        after = _host_state(host3)
        assert after["nft"] == before["nft"] and "198.18.0.1" in after["nft"]
        assert after["iptables"] == before["iptables"] and "198.18.0.2" in after["iptables"]
        assert after["addresses"] == before["addresses"] and "203.0.113.5" in after["addresses"]
        assert "198.18.0.0/24 via 203.0.113.1" in after["routes"]
        # up again after down makes it all again, and a second up is a no-op.
        up(world)
        assert world.vms["front-a"].ping(SERVER)
        again = run(host3, "up")
        assert "no changes" in again.stdout, again.stdout
        # A domain that loses its gateway in the fabric loses its namespace at the next up.
        host3.fabric.write_text(TEXT.replace(
            "    external: {host: host3, nic: eth2, address: 203.0.113.11/24, "
            "gateway: 203.0.113.1}\n", ""))
        shrunk = run(host3, "up")
        assert shrunk.returncode == 0, shrunk.stderr + shrunk.stdout
        assert f"delete namespace ovsnvgre-{FABRIC}-fabrikam" in shrunk.stdout, shrunk.stdout
        left = set(os.listdir("/run/netns"))
        assert f"ovsnvgre-{FABRIC}-contoso" in left and f"ovsnvgre-{FABRIC}-fabrikam" not in left
        ports = host3.switch.vsctl("list-ports", "br-int").split()
        assert sum(port.startswith("gw") for port in ports) == 1
    finally:
        sh("ip", "netns", "delete", stranger, check=False)


def test_trace_and_status_in_the_fabrics_terms(world):
    up(world)
    said = world.host1.ovsnvgre("trace", "--from", "web-b", "--to", SERVER).stdout
    assert "routed to the external gateway on host3, SNAT 203.0.113.10" in said, said
    assert "via tunnel to host3 with key 0x138900" in said, said
    said = world.host1.ovsnvgre("trace", "--from", "web-a", "--to", SERVER, "--proto",
                                "tcp:80").stdout
    assert "routed to the external gateway on host3, floating IP 203.0.113.21" in said, said
    said = world.host1.ovsnvgre("trace", "--from", "front-a", "--to", SERVER).stdout
    assert "SNAT 203.0.113.11" in said and "key 0x177100" in said, said
    assert "unless it is an address of host3 itself, which its namespace drops" in said, said
    said = run(world.host3, "trace", "--from", "db-c", "--to", SERVER).stdout
    assert "routed to the external gateway on host3, SNAT 203.0.113.10" in said, said
    assert "on port gw" in said and "unless" not in said, said
    # On the gateway host, trace knows its own addresses (one the fabric does not name),
    # which the namespace drops; the packet indeed never reaches the host.
    world.host3.netns.exec("ip", "addr", "add", "198.18.7.7/32", "dev", "lo")
    up(world)
    said = run(world.host3, "trace", "--from", "db-c", "--to", "198.18.7.7").stdout
    assert ("dropped by the external gateway on host3: 198.18.7.7 is an address of host "
            "host3 itself, which no VM of contoso reaches") in said, said
    assert not world.vms["db-c"].ping("198.18.7.7", count=1)
    # Inside the domain's prefixes, an address no VM holds never leaves.
    said = world.host1.ovsnvgre("trace", "--from", "web-b", "--to", "10.1.2.99").stdout
    assert "dropped by route: no VM of subnet db" in said, said
    # status on the gateway host: each external side, and what its conntrack holds.
    assert world.vms["web-b"].ping(SERVER) and world.vms["front-a"].ping(SERVER)
    result = run(world.host3, "status", "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    sides = {side["domain"]: side for side in report["external"]}
    assert sides["contoso"]["address"] == "203.0.113.10/24"
    assert sides["contoso"]["floating_ips"] == {"web-a": "203.0.113.21"}
    assert sides["contoso"]["state"] == sides["fabrikam"]["state"] == "up"
    assert sides["contoso"]["translations"] >= 1 and sides["fabrikam"]["translations"] >= 1
    text = run(world.host3, "status").stdout
    assert "external sides (2):" in text and "203.0.113.11/24" in text, text
    # A rule deleted by hand inside a namespace is drift, and `up` repairs it.
    sh("nft", "delete", "table", "ip", "ovsnvgre", netns=f"ovsnvgre-{FABRIC}-fabrikam")
    drifted = json.loads(run(world.host3, "status", "--json").stdout)
    assert {s["domain"]: s["state"] for s in drifted["external"]}["fabrikam"] == "drifted"
    assert not world.vms["front-a"].ping(SERVER, count=1)
    repaired = run(world.host3, "up")
    assert "set ruleset of namespace" in repaired.stdout + repaired.stderr, repaired.stdout
    assert world.vms["front-a"].ping(SERVER)


def test_a_missing_external_nic_is_refused_before_any_change(world):
    world.host3.netns.exec("ip", "link", "delete", "eth2")
    before = world.host3.switch.vsctl("show")
    result = run(world.host3, "up")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "ovsnvgre: error: host host3: routing domain contoso's external NIC eth2 does not "
        "exist on this host (and 1 more: `ovsnvgre plan` lists them); nothing was changed")
    assert _own_namespaces() == []
    assert world.host3.switch.vsctl("show") == before


def test_an_enslaved_external_nic_is_refused_before_any_change(world):
    world.host3.netns.exec("ip", "link", "add", "brx", "type", "bridge")
    world.host3.netns.exec("ip", "link", "set", "eth2", "master", "brx")
    result = run(world.host3, "up")
    assert result.returncode == 1
    assert "routing domain contoso's external NIC eth2 is enslaved to brx" in result.stderr
    assert _own_namespaces() == []


def _switch_state(host: Host) -> tuple[str, str, str]:
    flows = host.switch.appctl("bridge/dump-flows", "br-int") \
        if "br-int" in host.switch.vsctl("list-br").split() else ""
    flows = re.sub(r"(duration|n_packets|n_bytes|idle_age)=[^,]*, ", "", flows)
    return host.switch.vsctl("show"), flows, host.ip("-4", "route", "show")


def test_a_run_under_ip_netns_exec_is_refused_before_any_change(world):
    # `ip netns exec` gives the run a private mount namespace: a domain's namespace made
    # or deleted there would vanish (or stay) behind it, so `up` and `down` refuse first.
    host3 = world.host3
    before = _switch_state(host3)
    refused = host3.ovsnvgre("up")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("ovsnvgre: error: host host3: this run is in a private mount "
                           "namespace"), refused.stderr
    assert last.endswith("nothing was changed"), last
    assert _switch_state(host3) == before
    assert _own_namespaces() == []
    up(world)
    before = _switch_state(host3)
    refused = host3.ovsnvgre("down", "--no-verify")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stderr.strip().splitlines()[-1].endswith("nothing was changed")
    assert _switch_state(host3) == before
    again = run(host3, "up")
    assert again.returncode == 0 and "no changes" in again.stdout, again.stdout + again.stderr
    assert world.vms["web-b"].ping(SERVER)


def test_moving_a_domain_to_another_external_network(world):
    # The old address goes, and the kernel drops the default route with it: `up` replaces
    # both, and the domain leaves by its new address.
    up(world)
    world.outside.exec("ip", "addr", "add", "100.64.0.1/24", "dev", "eth0")
    fabric = world.host3.fabric
    fabric.write_text(fabric.read_text().replace(
        "address: 203.0.113.10/24\n      gateway: 203.0.113.1\n"
        "      floating_ips: {web-a: 203.0.113.21}",
        "address: 100.64.0.10/24\n      gateway: 100.64.0.1\n"
        "      floating_ips: {web-a: 100.64.0.21}"))
    for host in (world.host3, world.host1):
        moved = run(host, "up")
        assert moved.returncode == 0, moved.stdout + moved.stderr
    again = run(world.host3, "up")
    assert "no changes" in again.stdout, again.stdout + again.stderr
    server = Listener(world.outside.name, SERVER)
    try:
        assert world.ask("web-b", "udp").startswith("100.64.0.10:")
        assert world.ask("web-a", "udp").startswith("100.64.0.21:")
        assert world.ask("front-a", "udp").startswith("203.0.113.11:")
    finally:
        server.stop()


def test_a_netlink_error_in_the_external_phase_rolls_back(world):
    # A macvlan cannot sit on the loopback device: the kernel refuses it (EINVAL) once
    # the run has begun; the run says so in one line and rolls back.
    fabric = world.host3.fabric
    fabric.write_text(fabric.read_text().replace(
        "fabrikam:\n    external: {host: host3, nic: eth2,",
        "fabrikam:\n    external: {host: host3, nic: lo,"))
    before = _switch_state(world.host3)
    failed = run(world.host3, "up")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    last = failed.stderr.strip().splitlines()[-1]
    assert "internal error" not in failed.stderr, failed.stderr
    assert last.startswith("ovsnvgre: error: host host3: namespace "
                           f"ovsnvgre-{FABRIC}-fabrikam: Invalid argument"), last
    assert "Rolled back" in last, last
    assert _switch_state(world.host3) == before
    # The namespaces the run made (contoso's whole, fabrikam's begun) go with it.
    assert _own_namespaces() == []
    assert _gateway_links(world.host3) == []


def test_down_removes_a_namespace_left_unmarked_by_a_run_that_died(world):
    # A run killed while making a namespace leaves its links without their mark (the
    # ifalias is set after they are made): the namespace's name is still this fabric's
    # domain's on this host, so `down` removes it with its bridge port.
    up(world)
    contoso = f"ovsnvgre-{FABRIC}-contoso"
    for link in ("int0", "ext0"):
        sh("ip", "-n", contoso, "link", "set", link, "alias", "")
    plan = run(world.host3, "plan")
    assert f"set links of namespace {contoso}" in plan.stdout, plan.stdout + plan.stderr
    down = run(world.host3, "down", "--no-verify")
    assert down.returncode == 0, down.stdout + down.stderr
    assert _own_namespaces() == []
    assert _gateway_links(world.host3) == []


def test_a_rule_added_by_hand_in_a_namespace_is_drift_that_up_repairs(world):
    # A rule that lets the outside in to every CA: the table's comment is untouched, but
    # the rules nft lists are not those `up` installed.
    up(world)
    contoso = f"ovsnvgre-{FABRIC}-contoso"
    sh("nft", "add", "rule", "ip", "ovsnvgre", "forward", "iifname", "ext0", "accept",
       netns=contoso)
    plan = run(world.host3, "plan")
    assert f"set ruleset of namespace {contoso}" in plan.stdout, plan.stdout + plan.stderr
    report = json.loads(run(world.host3, "status", "--json").stdout)
    assert {s["domain"]: s["state"] for s in report["external"]}["contoso"] == "drifted"
    repaired = run(world.host3, "up")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    listed = sh("nft", "list", "chain", "ip", "ovsnvgre", "forward", netns=contoso).stdout
    assert 'iifname "ext0" accept' not in listed, listed
    again = run(world.host3, "up")
    assert "no changes" in again.stdout, again.stdout + again.stderr


def test_status_on_a_gateway_host_with_addresses_of_its_own(world):
    # Every real gateway host has addresses besides its PA (here one on lo): they are in
    # each domain's blocked set, and status reads the sides as `up` wrote them.
    world.host3.netns.exec("ip", "addr", "add", "198.18.7.7/32", "dev", "lo")
    up(world)
    result = run(world.host3, "status", "--json")
    report = json.loads(result.stdout)
    assert {s["domain"]: s["state"] for s in report["external"]} == {
        "contoso": "up", "fabrikam": "up"}, report["external"]
    assert result.returncode == 0, result.stdout + result.stderr
    # A side that is drifted is drift: status exits 3.
    sh("nft", "delete", "table", "ip", "ovsnvgre", netns=f"ovsnvgre-{FABRIC}-contoso")
    drifted = run(world.host3, "status", "--json")
    assert drifted.returncode == 3, drifted.stdout + drifted.stderr
    states = {s["domain"]: s["state"] for s in json.loads(drifted.stdout)["external"]}
    assert states == {"contoso": "drifted", "fabrikam": "up"}, states


def test_trace_says_the_gateway_drops_the_provider_network_and_other_domains(world):
    up(world)
    for target, what in (("192.0.2.13", "the PA of host host3"),
                         ("203.0.113.21", "routing domain contoso's floating IP"),
                         ("203.0.113.10", "routing domain contoso's SNAT address")):
        said = world.host1.ovsnvgre("trace", "--from", "front-a", "--to", target).stdout
        assert (f"dropped by the external gateway on host3: {target} is {what}, which no VM "
                "of fabrikam reaches") in said, said
        assert not world.vms["front-a"].ping(target, count=1)
    said = world.host1.ovsnvgre("trace", "--from", "front-a", "--to", SERVER).stdout
    assert "routed to the external gateway on host3, SNAT 203.0.113.11" in said, said


def _gateway_run(world: World, *args: str) -> subprocess.Popen:
    """``ovsnvgre ARGS`` on host3 in the background, as ``run`` enters it."""
    host3 = world.host3
    return subprocess.Popen(  # noqa: S603 - a fixed argv
        ["nsenter", f"--net=/run/netns/{host3.netns.name}", "--", sys.executable, "-m",
         "ovsnvgre", *args, "-c", str(host3.fabric), "--host", "host3"],
        env=host3.switch.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _await_confirmation(world: World, pending: subprocess.Popen) -> None:
    """Wait until ``pending`` (an `up --confirm`) awaits confirmation, its timer's pid
    written; fails the test if it ends first or takes a minute."""
    state = world.host3.switch.rundir / "ovsnvgre-rollback.json"
    timer = world.host3.switch.rundir / "ovsnvgre-rollback.json.timer"
    for _ in range(600):
        if state.exists() and "awaiting-confirmation" in state.read_text() \
                and timer.exists() and timer.read_text().strip().isdigit():
            return
        assert pending.poll() is None, pending.communicate()
        time.sleep(0.1)
    pytest.fail("the run never awaited confirmation")


def test_the_confirmation_timers_rollback_deletes_the_namespaces_the_run_made(world):
    # `up --confirm` made both domains' namespaces; nobody confirms: the timer (another
    # process, after the run) rolls back to the host before it, namespaces included.
    before = _switch_state(world.host3)
    result = run(world.host3, "up", "--confirm", "3")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "not confirmed in time: rolled back" in result.stdout, result.stdout
    assert _own_namespaces() == []
    assert _gateway_links(world.host3) == []
    assert _switch_state(world.host3) == before
    assert "ovsnvgre-rollback.log" in os.listdir(world.host3.switch.rundir)
    log = (world.host3.switch.rundir / "ovsnvgre-rollback.log").read_text()
    assert f"ovsnvgre-{FABRIC}-contoso" in log, log


def test_rollback_after_the_run_and_its_timer_died_deletes_the_namespaces(world):
    # The machine's worst case short of a reboot: the run and its timer both killed while
    # the change awaits confirmation.  `ovsnvgre rollback` returns the host to before.
    before = _switch_state(world.host3)
    pending = _gateway_run(world, "up", "--confirm", "300")
    timer = world.host3.switch.rundir / "ovsnvgre-rollback.json.timer"
    try:
        _await_confirmation(world, pending)
        assert _own_namespaces() == [f"ovsnvgre-{FABRIC}-contoso",
                                     f"ovsnvgre-{FABRIC}-fabrikam"]
        os.kill(int(timer.read_text().strip()), signal.SIGKILL)
    finally:
        pending.kill()
        pending.communicate()
    rolled = run_bare(world.host3, "rollback")
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert _own_namespaces() == []
    assert _switch_state(world.host3) == before


def test_rolling_back_a_removed_gateway_restores_what_it_can_and_up_the_rest(world):
    # Taking contoso's way out away under --confirm deletes its namespace (and so the
    # veth end on br-int); `ovsnvgre rollback` puts the rows and flows back but cannot
    # make a namespace again: it says so, the flows of that port wait for the next `up`,
    # which makes the namespace again.
    up(world)
    fabric = world.host3.fabric
    original = fabric.read_text()
    fabric.write_text(original.replace(
        "    external:\n      host: host3\n      nic: eth2\n      address: 203.0.113.10/24\n"
        "      gateway: 203.0.113.1\n      floating_ips: {web-a: 203.0.113.21}\n", "    {}\n"))
    assert fabric.read_text() != original
    pending = _gateway_run(world, "up", "--confirm", "300")
    try:
        _await_confirmation(world, pending)
        assert _own_namespaces() == [f"ovsnvgre-{FABRIC}-fabrikam"]
        rolled = run_bare(world.host3, "rollback")
        out, err = pending.communicate(timeout=120)
    finally:
        pending.kill()
    # Not the state before the run: `rollback` says what it could not restore, and fails.
    assert rolled.returncode == 1, rolled.stdout + rolled.stderr
    # contoso's namespace deleted, fabrikam's ruleset changed (contoso's address is no
    # longer another domain's to block).
    left = f"ovsnvgre-{FABRIC}-contoso, ovsnvgre-{FABRIC}-fabrikam"
    assert (f"except namespace(s) {left}, which the run deleted or changed and a "
            "rollback does not make again") in rolled.stderr.strip().splitlines()[-1]
    assert "rolled back by `ovsnvgre rollback` to the state before the run; except " \
           f"namespace(s) {left}" in out, out + err
    assert pending.returncode == 1
    log = (world.host3.switch.rundir / "ovsnvgre-rollback.log").read_text()
    assert re.search(r"not restored: [1-9][0-9]* flows of gw[0-9a-f]{8}, whose device is gone",
                     log), log
    fabric.write_text(original)
    again = run(world.host3, "up")
    assert again.returncode == 0, again.stdout + again.stderr
    assert _own_namespaces() == [f"ovsnvgre-{FABRIC}-contoso", f"ovsnvgre-{FABRIC}-fabrikam"]
    assert "no changes" in run(world.host3, "up").stdout
    server = Listener(world.outside.name, SERVER)
    try:
        assert world.ask("web-b", "udp").startswith("203.0.113.10:")
    finally:
        server.stop()


def test_after_a_reboot_one_up_makes_the_way_out_again(world):
    # A reboot of the gateway host loses its domains' namespaces (and with them the
    # bridge ports' veths) and its flows, while Open vSwitch's database keeps the ports'
    # rows, which ovs-vswitchd cannot open when it starts: the boot's one
    # `up` (examples/ovsnvgre-boot.service) must make them again and send the tunnels'
    # frames to the new ports, with no second run.
    up(world)
    host3 = world.host3
    ports = [port for port in host3.switch.vsctl("list-ports", "br-int").split()
             if port.startswith("gw")]
    assert len(ports) == 2, ports
    host3.switch.stop_vswitchd()
    for name in (f"ovsnvgre-{FABRIC}-contoso", f"ovsnvgre-{FABRIC}-fabrikam"):
        sh("ip", "netns", "delete", name)
    host3.switch.start_vswitchd()
    for port in ports:  # the rows stay, their devices are gone: no OpenFlow number
        host3.switch.vsctl("wait-until", "Interface", port, "ofport=-1")
    booted = run(host3, "up")
    assert booted.returncode == 0, booted.stdout + booted.stderr
    for name in ("web-b", "front-a", "db-c"):
        assert world.vms[name].ping(SERVER), f"{name} cannot ping the outside server"
    server = Listener(world.outside.name, SERVER)
    try:
        assert world.ask("web-b", "tcp").startswith("203.0.113.10:")
        assert world.ask("front-a", "udp").startswith("203.0.113.11:")
    finally:
        server.stop()
    again = run(host3, "up")
    assert again.returncode == 0 and "no changes" in again.stdout, again.stdout + again.stderr
