"""The distributed router on real packets (issue 18): two hosts, two tenants whose prefixes
overlap, ping and TCP routed both ways on one host and across hosts, in each tunnel mode.

tests/fabrics.py's ROUTED: host1 has web-a (contoso web), db-a (contoso db), other-a
(fabrikam other) and flat-a (L2-only, at 10.1.1.1); host2 has db-b (contoso db), app-b
(contoso app) and data-b (fabrikam data, at db-b's 10.1.2.20).  Every VM of a routed
subnet has a default route via its gateway, as the lab gives it.
"""

from __future__ import annotations

import re

import pytest
from conftest import running_lab
from fabrics import ROUTED
from test_pipeline_e2e import Capture

from ovsnvgre.lab.pcap import gre_packets

ROUTER = "02:00:5e:00:01:01"
VMS = {  # name: (host, port, MAC, CA, gateway)
    "web-a": ("host1", "vnet0", "02:00:00:00:51:01", "10.1.1.10/24", "10.1.1.1"),
    "db-a": ("host1", "vnet1", "02:00:00:00:52:01", "10.1.2.10/24", "10.1.2.1"),
    "other-a": ("host1", "vnet2", "02:00:00:00:61:01", "10.1.1.10/24", "10.1.1.1"),
    "flat-a": ("host1", "vnet3", "02:00:00:00:71:01", "10.1.1.1/24", None),
    "db-b": ("host2", "vnet0", "02:00:00:00:52:02", "10.1.2.20/24", "10.1.2.1"),
    "app-b": ("host2", "vnet1", "02:00:00:00:53:02", "10.1.3.20/24", "10.1.3.1"),
    "data-b": ("host2", "vnet2", "02:00:00:00:62:02", "10.1.2.20/24", "10.1.2.1"),
}


@pytest.fixture(scope="module", params=["per-vsid", "per-peer", "flow"])
def routed(request, tmp_path_factory):
    """Both hosts up with the routed fabric, in one tunnel mode."""
    with running_lab(tmp_path_factory.mktemp("routed")) as lab:
        lab.fabric.write_text(ROUTED.replace("tunnel_ports: per-vsid",
                                             f"tunnel_ports: {request.param}"))
        hosts = {
            "host1": lab.host("host1", "198.51.100.11/24", "198.51.100.1",
                              vm_ports=("vnet0", "vnet1", "vnet2", "vnet3")),
            "host2": lab.host("host2", "203.0.113.11/24", "203.0.113.1",
                              vm_ports=("vnet0", "vnet1", "vnet2")),
        }
        vms = {}
        for name, (host, port, mac, ca, gateway) in VMS.items():
            vms[name] = lab.vm(hosts[host], port, mac, ca)
            if gateway:
                vms[name].netns.exec("ip", "route", "add", "default", "via", gateway)
        for host in hosts.values():
            result = host.ovsnvgre("up")
            assert result.returncode == 0, result.stderr
        yield hosts, vms, request.param


def capture(host, path):
    """tcpdump of GRE on the host's uplink, each packet written as it comes: without
    immediate mode the last ring block of a short capture is lost when it stops."""
    the_capture = Capture(host, path)
    the_capture.command[5:5] = ["--immediate-mode"]
    return the_capture


def ping(vm, address: str, *extra: str, count: int = 3) -> tuple[bool, set[int]]:
    """Whether any echo came back, and the TTLs of the replies."""
    result = vm.netns.exec("ping", "-c", str(count), "-W", "2", "-i", "0.2", *extra, address,
                           check=False)
    return result.returncode == 0, {int(t) for t in re.findall(r"ttl=(\d+)", result.stdout)}


@pytest.mark.parametrize("source,target,address", [
    ("web-a", "db-a", "10.1.2.10"), ("db-a", "web-a", "10.1.1.10"),
], ids=["web-a to db-a", "db-a to web-a"])
def test_routed_on_one_host_both_ways(routed, source, target, address):
    _, vms, _ = routed
    answered, ttls = ping(vms[source], address)
    assert answered and ttls == {63}  # one router hop from a Linux VM (64)
    assert vms[source].tcp(vms[target])
    neighbours = vms[source].netns.exec("ip", "neigh", "show").stdout
    assert ROUTER in neighbours  # the gateway, resolved by ARP on the host


@pytest.mark.parametrize("source,target,address", [
    ("web-a", "db-b", "10.1.2.20"), ("db-b", "web-a", "10.1.1.10"),
    ("web-a", "app-b", "10.1.3.20"), ("app-b", "db-a", "10.1.2.10"),
    ("other-a", "data-b", "10.1.2.20"), ("data-b", "other-a", "10.1.1.10"),
], ids=["web-a to db-b", "db-b to web-a", "web-a to app-b", "app-b to db-a",
        "other-a to data-b", "data-b to other-a"])
def test_routed_across_hosts_both_ways(routed, source, target, address):
    _, vms, _ = routed
    answered, ttls = ping(vms[source], address)
    assert answered and ttls == {63}
    assert vms[source].tcp(vms[target])


def test_routed_frames_carry_the_destination_vsids_key(routed, tmp_path):
    hosts, vms, _ = routed
    pcap = tmp_path / "routed.pcap"
    with capture(hosts["host1"], pcap):
        assert ping(vms["web-a"], "10.1.3.20")[0]   # web (5001) -> app (5003) and back
    keyed = {}
    for packet in gre_packets(pcap):
        inner = packet.inner
        if inner[12:14] == b"\x08\x00" and inner[23] == 1:  # IPv4 ICMP
            keyed[inner[26:30], inner[30:34]] = packet.key
    request = (bytes([10, 1, 1, 10]), bytes([10, 1, 3, 20]))
    reply = (request[1], request[0])
    assert keyed[request] == 5003 << 8 and keyed[reply] == 5001 << 8


def test_gateway_arp_and_ping_are_answered_on_the_host(routed, tmp_path):
    hosts, vms, _ = routed
    web_a = vms["web-a"]
    web_a.netns.exec("ip", "neigh", "flush", "dev", "eth0")
    pcap = tmp_path / "gateway.pcap"
    with capture(hosts["host1"], pcap):
        arp = web_a.netns.exec("arping", "-c", "2", "-w", "3", "-I", "eth0", "10.1.1.1",
                               check=False)
        own = ping(web_a, "10.1.1.1")
        remote = ping(web_a, "10.1.3.1")  # app's gateway: app has no VM on this host
        routed_ping = ping(web_a, "10.1.3.20")  # the capture's proof that it sees
    assert arp.returncode == 0 and f"[{ROUTER}]" in arp.stdout.lower()
    assert own == (True, {64}) and remote == (True, {64}) and routed_ping[0]
    packets = gre_packets(pcap)
    echoes = [p for p in packets if p.inner[12:14] == b"\x08\x00" and p.inner[23] == 1]
    assert {p.inner[30:34] for p in echoes} == {bytes([10, 1, 3, 20]), bytes([10, 1, 1, 10])}
    # Not one ARP frame, and no echo but the routed one's, on the underlay.
    assert [p for p in packets if p.inner[12:14] == b"\x08\x06"] == []


def test_no_gateway_for_a_vm_outside_the_domain(routed):
    _, vms, _ = routed
    # fabrikam has no 10.1.3.0/24: contoso's app gateway does not answer fabrikam.
    assert not ping(vms["other-a"], "10.1.3.1", count=2)[0]
    # The L2-only VM holds 10.1.1.1 itself; nobody answers it for the router's MAC.
    flat = vms["flat-a"]
    flat.netns.exec("ip", "neigh", "replace", "10.1.1.9", "lladdr", ROUTER, "dev", "eth0")
    assert not ping(flat, "10.1.1.9", count=2)[0]


def test_overlapping_prefixes_stay_apart(routed):
    _, vms, _ = routed
    # 10.1.2.20 is db-b for contoso and data-b for fabrikam: with db-b down, contoso
    # reaches nobody there, fabrikam still reaches data-b.
    db_b = vms["db-b"]
    db_b.netns.exec("ip", "link", "set", "eth0", "down")
    try:
        assert not ping(vms["web-a"], "10.1.2.20", count=2)[0]
        assert ping(vms["other-a"], "10.1.2.20")[0]
    finally:
        db_b.netns.exec("ip", "link", "set", "eth0", "up")
        db_b.netns.exec("ip", "route", "replace", "default", "via", "10.1.2.1")
    # app-b's address exists in contoso only.
    assert not ping(vms["other-a"], "10.1.3.20", count=2)[0]
    assert ping(vms["web-a"], "10.1.2.20")[0]


def test_ttl_1_is_not_routed(routed):
    _, vms, _ = routed
    assert not ping(vms["web-a"], "10.1.2.10", "-t", "1", count=2)[0]
    assert ping(vms["web-a"], "10.1.2.10", "-t", "2")[0]


def test_a_spoofed_source_is_not_routed(routed):
    _, vms, _ = routed
    web_a = vms["web-a"]
    web_a.netns.exec("ip", "addr", "add", "10.1.1.99/24", "dev", "eth0")
    try:
        assert not ping(web_a, "10.1.2.20", "-I", "10.1.1.99", count=2)[0]
    finally:
        web_a.netns.exec("ip", "addr", "del", "10.1.1.99/24", "dev", "eth0")
    assert ping(web_a, "10.1.2.20")[0]
