"""Receiving NVGRE from an independent sender: the tenant is the key's top 24 bits.

RFC 7637 section 3.2: the 32-bit GRE key is ``VSID << 8 | FlowID``; the FlowID may
carry per-flow entropy and never selects the tenant.  host1 runs ovsnvgre on a real
switch (userspace datapath); host2 is no switch at all but a namespace where scapy
plays a Hyper-V host (tests/nvgre_peer.py): echo requests from host2's VMs to host1's
VMs in every VSID with FlowIDs 0, 1, 0x2a and 0xff, each of which must be delivered to
the right VM and answered, the answer on the wire carrying that VSID; and frames that
must be dropped: a VSID with no VM on host1, a VSID the fabric does not have, the
key of the `plain` layout (the VSID unshifted) under `rfc7637`, and a right key sent
from a PA that is no host of the fabric.  In all three tunnel modes: per-vsid,
per-peer, and flow (one port for every peer, which takes frames from any PA).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fabrics import TWO_HOSTS

HOST1_PA, HOST2_PA = "198.51.100.11", "203.0.113.11"
# An address on host2's uplink that is no host of the fabric.
STRANGER_PA = "203.0.113.12"
PEER = Path(__file__).with_name("nvgre_peer.py")

# host2's VMs are only names in the fabric: scapy speaks for them.
FABRIC = TWO_HOSTS.replace("  blue: {vsid: 6001}\n", "  blue: {vsid: 6001}\n"
                                                     "  green: {vsid: 7001}\n") + (
    '  green-b: {host: host2, subnet: green, port: vnet2, mac: "02:00:00:00:70:02", '
    "ca: 10.0.0.2/24}\n")
RED, BLUE, GREEN, UNKNOWN = 5001, 6001, 7001, 0x2000
# The VM of host1 each VSID reaches, and the VM of host2 that speaks to it.
TARGETS = {RED: ("02:00:00:00:50:01", "02:00:00:00:50:02"),
           BLUE: ("02:00:00:00:60:01", "02:00:00:00:60:02")}
FLOW_IDS = (0, 1, 0x2A, 0xFF)


class Idents:
    """ICMP identifiers, one per probe, so that each reply names its probe."""

    def __init__(self) -> None:
        self.next = 0x4E00

    def __call__(self) -> int:
        self.next += 1
        return self.next


def probe(ident: int, key: int, vsid_of_target: int = RED) -> dict:
    """An echo request from host2's VM (10.0.0.2) to host1's VM (10.0.0.1) under ``key``."""
    vm_mac, peer_mac = TARGETS[vsid_of_target]
    return {"key": key, "ident": ident, "src_mac": peer_mac, "dst_mac": vm_mac,
            "src_ip": "10.0.0.2", "dst_ip": "10.0.0.1"}


def send(peer_ns: str, probes: list[dict], tries: int, timeout: float) -> list[dict]:
    """Run the scapy peer in host2's namespace; its results, probe by probe."""
    request = {"remote": HOST1_PA, "tries": tries, "timeout": timeout, "probes": probes}
    result = subprocess.run(["ip", "netns", "exec", peer_ns, sys.executable, str(PEER)],
                            input=json.dumps(request), capture_output=True, text=True,
                            timeout=30 + len(probes) * tries * timeout)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["probes"]


def classify_drops(host) -> int:
    """Packets the classify table's default flow (drop) has taken on host1 so far."""
    dump = host.switch.netns.exec("ovs-ofctl", "dump-flows", "br-int", "table=0",
                                  env=host.switch.env).stdout
    return sum(int(n) for n in re.findall(r"n_packets=(\d+),.* priority=0 ", dump))


RFC7637_MODES = pytest.mark.parametrize("receiver", [("per-vsid", "rfc7637"),
                                                     ("per-peer", "rfc7637"),
                                                     ("flow", "rfc7637")],
                                        indirect=True, ids=["per-vsid", "per-peer", "flow"])


@pytest.fixture
def receiver(request, lab):
    """host1 converged by ovsnvgre in the given (mode, layout); host2 a bare namespace."""
    mode, layout = request.param
    text = FABRIC.replace("tunnel_ports: per-vsid", f"tunnel_ports: {mode}")
    text = text.replace("key_layout: rfc7637", f"key_layout: {layout}")
    lab.fabric.write_text(text)
    host1 = lab.host("host1", f"{HOST1_PA}/24", "198.51.100.1")
    host2 = lab.host("host2", f"{HOST2_PA}/24", "203.0.113.1", vm_ports=(), start=False)
    lab.vm(host1, "vnet0", "02:00:00:00:50:01", "10.0.0.1/24")
    lab.vm(host1, "vnet1", "02:00:00:00:60:01", "10.0.0.1/24")
    result = host1.ovsnvgre("up")
    assert result.returncode == 0, result.stderr
    return host1, host2


def assert_answered(result: dict, vsid: int) -> None:
    """The probe was answered by host1's VM of ``vsid``, as NVGRE with that VSID, FlowID 0."""
    assert result["replies"], f"key {result['key']:#x}: no reply after {result['sent']} tries"
    vm_mac, peer_mac = TARGETS[vsid]
    for reply in result["replies"]:
        assert (reply["outer_src"], reply["outer_dst"]) == (HOST1_PA, HOST2_PA)
        assert reply["key_present"] and not reply["checksum_present"]
        assert not reply["sequence_present"] and reply["version"] == 0
        assert reply["protocol"] == 0x6558
        assert (reply["inner_src_mac"], reply["inner_dst_mac"]) == (vm_mac, peer_mac)
        assert (reply["inner_src_ip"], reply["inner_dst_ip"]) == ("10.0.0.1", "10.0.0.2")
        assert reply["key"] >> 8 == vsid, f"reply key {reply['key']:#x} is not VSID {vsid}"


@RFC7637_MODES
def test_every_flow_id_of_a_vsid_reaches_its_vm(receiver):
    _, host2 = receiver
    ident = Idents()
    probes = [(vsid, probe(ident(), vsid << 8 | flow_id, vsid))
              for vsid in (RED, BLUE) for flow_id in FLOW_IDS]
    results = send(host2.netns.name, [p for _, p in probes], tries=5, timeout=1.0)
    for (vsid, _), result in zip(probes, results, strict=True):
        assert_answered(result, vsid)
        # ovsnvgre itself sends FlowID 0 (RFC 7637: no entropy generated).
        assert {reply["key"] for reply in result["replies"]} == {vsid << 8}


@RFC7637_MODES
def test_frames_of_no_tenant_here_are_dropped(receiver):
    host1, host2 = receiver
    ident = Idents()
    # The path works (and the underlay next hop is resolved) before anything is dropped.
    assert_answered(send(host2.netns.name, [probe(ident(), RED << 8 | 0x2A)], 5, 1.0)[0], RED)
    before = classify_drops(host1)
    doomed = [
        probe(ident(), GREEN << 8 | 0x2A),   # a VSID of the fabric with no VM on host1
        probe(ident(), GREEN << 8),
        probe(ident(), UNKNOWN << 8 | 1),    # a VSID the fabric does not have
        probe(ident(), RED),                 # the plain layout's key: VSID 5001 unshifted
    ]
    # Each doomed frame is followed by one that must be answered: the switch handles the
    # frames of one sender in order, so when that answer is back the doomed one was
    # handled, and an answer to it would be back too.
    probes = []
    for frame in doomed:
        probes += [frame, probe(ident(), RED << 8 | 0xFF)]
    results = send(host2.netns.name, probes, tries=1, timeout=5.0)
    for doomed_result, control in zip(results[::2], results[1::2], strict=True):
        assert_answered(control, RED)
        assert doomed_result["replies"] == [], f"key {doomed_result['key']:#x} was answered"
    # And they did reach host1's switch, which dropped them in classify.
    assert classify_drops(host1) - before >= len(doomed)


@RFC7637_MODES
def test_frames_from_a_pa_that_is_no_peer_are_dropped(receiver):
    """Per-vsid and per-peer ports have the peer's remote_ip, so no port takes a frame
    from another PA; the flow port takes any PA, and classify keeps only the PAs of
    the peers that share the frame's VSID."""
    host1, host2 = receiver
    host2.netns.exec("ip", "addr", "add", f"{STRANGER_PA}/24", "dev", "eth1")
    ident = Idents()
    assert_answered(send(host2.netns.name, [probe(ident(), RED << 8)], 5, 1.0)[0], RED)
    before = classify_drops(host1)
    probes = []
    for flow_id in (0, 0x2A):
        probes += [{**probe(ident(), RED << 8 | flow_id), "source": STRANGER_PA},
                   probe(ident(), RED << 8 | 0xFF)]
    results = send(host2.netns.name, probes, tries=1, timeout=5.0)
    for stranger, control in zip(results[::2], results[1::2], strict=True):
        assert_answered(control, RED)
        assert stranger["replies"] == [], f"key {stranger['key']:#x} from {STRANGER_PA}"
    if "gre-flow" in host1.switch.vsctl("list-ports", "br-int").split():
        # They reached host1's flow port, and classify dropped them.
        assert classify_drops(host1) - before >= 2


@pytest.mark.parametrize("receiver", [("per-vsid", "plain"), ("per-peer", "plain"),
                                      ("flow", "plain")],
                         indirect=True, ids=["per-vsid", "per-peer", "flow"])
def test_plain_layout_takes_the_whole_key_as_the_vsid(receiver):
    host1, host2 = receiver
    ident = Idents()
    answered = send(host2.netns.name, [probe(ident(), RED), probe(ident(), BLUE, BLUE)], 5, 1.0)
    for vsid, result in zip((RED, BLUE), answered, strict=True):
        assert result["replies"], f"key {vsid:#x}: no reply"
        assert {reply["key"] for reply in result["replies"]} == {vsid}
        assert result["replies"][0]["inner_src_mac"] == TARGETS[vsid][0]
    # The rfc7637 key of Red means VSID 0x138900 to a plain fabric: no tenant here
    # (per-vsid: no port takes the key; per-peer and flow: classify drops it).
    results = send(host2.netns.name, [probe(ident(), RED << 8), probe(ident(), RED)], 1, 5.0)
    assert results[0]["replies"] == [] and results[1]["replies"]
