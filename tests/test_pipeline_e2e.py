"""The tenant pipeline on real packets: two hosts, Red 5001 and Blue 6001, overlapping CAs."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from fabrics import TWO_HOSTS

from ovsnvgre.lab.pcap import gre_packets

RED_KEY, BLUE_KEY = 5001 << 8, 6001 << 8


class Capture:
    """tcpdump on a host's uplink for the life of a `with` block."""

    def __init__(self, host, path: Path, expression: str = "ip proto 47") -> None:
        self.command = ["ip", "netns", "exec", host.netns.name, "tcpdump", "-i", "eth1", "-n",
                        "-U", "-w", str(path), expression]
        self.path = path

    def __enter__(self) -> Capture:
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        assert self.process.stderr is not None
        line = self.process.stderr.readline()  # "listening on eth1 ..."
        assert "listening" in line, line
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)  # let the last packets reach the file
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture(params=["per-vsid", "per-peer", "flow"])
def overlay(request, lab):
    lab.fabric.write_text(TWO_HOSTS.replace("tunnel_ports: per-vsid",
                                            f"tunnel_ports: {request.param}"))
    host1 = lab.host("host1", "198.51.100.11/24", "198.51.100.1")
    host2 = lab.host("host2", "203.0.113.11/24", "203.0.113.1")
    vms = {
        "red-a": lab.vm(host1, "vnet0", "02:00:00:00:50:01", "10.0.0.1/24"),
        "blue-a": lab.vm(host1, "vnet1", "02:00:00:00:60:01", "10.0.0.1/24"),
        "red-b": lab.vm(host2, "vnet0", "02:00:00:00:50:02", "10.0.0.2/24"),
        "blue-b": lab.vm(host2, "vnet1", "02:00:00:00:60:02", "10.0.0.2/24"),
    }
    for host in (host1, host2):
        result = host.ovsnvgre("up")
        assert result.returncode == 0, result.stderr
    return host1, host2, vms


def test_each_vsid_reaches_itself_across_hosts_and_nothing_else(overlay, tmp_path):
    host1, host2, vms = overlay
    # Ping and TCP inside each VSID, both directions.
    assert vms["red-a"].ping("10.0.0.2", count=2)
    assert vms["red-b"].ping("10.0.0.1", count=2)
    assert vms["blue-a"].ping("10.0.0.2", count=2)
    assert vms["blue-b"].ping("10.0.0.1", count=2)
    assert vms["red-a"].tcp(vms["red-b"])
    assert vms["blue-b"].tcp(vms["blue-a"])
    # The address red-a reaches is red-b's, never blue-b's: its ARP entry says so.
    neighbours = vms["red-a"].netns.exec("ip", "neigh", "show", "10.0.0.2").stdout
    assert "02:00:00:00:50:02" in neighbours
    # With red-b gone, 10.0.0.2 (blue-b's CA too) is unreachable from Red.
    vms["red-b"].netns.exec("ip", "link", "set", "eth0", "down")
    vms["red-a"].netns.exec("ip", "neigh", "flush", "dev", "eth0")
    assert not vms["red-a"].ping("10.0.0.2", count=2)
    vms["red-b"].netns.exec("ip", "link", "set", "eth0", "up")


def test_spoofed_frames_reach_nobody(overlay):
    _, _, vms = overlay
    red_a = vms["red-a"]
    assert red_a.ping("10.0.0.2")
    # Another source address, even with the neighbour already known: dropped.
    red_a.netns.exec("ip", "addr", "add", "10.0.0.9/24", "dev", "eth0")
    assert not red_a.ping("10.0.0.2", count=2, source="10.0.0.9")
    red_a.netns.exec("ip", "addr", "del", "10.0.0.9/24", "dev", "eth0")
    assert red_a.ping("10.0.0.2")
    # Another MAC: dropped, ARP included.
    red_a.netns.exec("ip", "link", "set", "eth0", "address", "02:00:00:00:50:99")
    red_a.netns.exec("ip", "neigh", "flush", "dev", "eth0")
    assert not red_a.ping("10.0.0.2", count=2)
    red_a.netns.exec("ip", "link", "set", "eth0", "address", "02:00:00:00:50:01")
    assert red_a.ping("10.0.0.2", count=2)


def test_arp_for_a_remote_ca_is_answered_locally(overlay, tmp_path):
    host1, _, vms = overlay
    red_a = vms["red-a"]
    red_a.netns.exec("ip", "neigh", "flush", "dev", "eth0")
    capture = tmp_path / "arp.pcap"
    with Capture(host1, capture):
        reply = red_a.netns.exec("arping", "-c", "2", "-w", "3", "-I", "eth0", "10.0.0.2",
                                 check=False)
    assert reply.returncode == 0, reply.stdout
    assert "[02:00:00:00:50:02]" in reply.stdout.lower()
    # Not one ARP frame crossed the underlay (IPv6 chatter of the VMs may).
    arp_over_gre = [p for p in gre_packets(capture) if p.inner[12:14] == b"\x08\x06"]
    assert arp_over_gre == []


def test_gre_on_the_wire_is_nvgre(overlay, tmp_path):
    host1, _, vms = overlay
    capture = tmp_path / "gre.pcap"
    with Capture(host1, capture):
        assert vms["red-a"].ping("10.0.0.2", count=3)
        assert vms["blue-a"].ping("10.0.0.2", count=3)
    packets = gre_packets(capture)
    assert len(packets) >= 12  # 3 requests and 3 replies per VSID at least
    for packet in packets:
        assert packet.key_present and not packet.checksum_present
        assert not packet.sequence_present and packet.version == 0
        assert packet.protocol == 0x6558  # transparent Ethernet bridging
    keys = {packet.key for packet in packets}
    assert keys == {RED_KEY, BLUE_KEY}
    # Every inner frame under a key comes from a VM of that VSID.
    red_macs = {"02:00:00:00:50:01", "02:00:00:00:50:02"}
    blue_macs = {"02:00:00:00:60:01", "02:00:00:00:60:02"}
    for packet in packets:
        source = packet.inner[6:12].hex(":")
        assert source in (red_macs if packet.key == RED_KEY else blue_macs), source
