"""overlay.flow_id: hash - per-flow entropy in the FlowID, the key's low 8 bits (RFC 7637 3.2).

With ``hash`` every frame of one inner flow carries one FlowID and different flows
spread over the 256 values, the VSID staying in the top 24 bits; with ``zero`` (the
default) every key is ``VSID << 8``.  Checked three ways: the flows as text (pure), a
real switch through ofproto/trace and the commands that describe keys, and packets:
16 TCP connections between two VMs on two hosts, captured on the underlay.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import running_lab
from fabrics import TWO_HOSTS
from scapy.layers.inet import GRE, IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap
from test_pipeline_e2e import Capture
from test_trace import Tracer

from ovsnvgre import fabric
from ovsnvgre.changes import FlowChanges
from ovsnvgre.desired import desired_host
from ovsnvgre.lab import topology, wire
from ovsnvgre.lab.pcap import gre_packets
from ovsnvgre.pipeline import describe, desired_flows, table_of
from ovsnvgre.pipeline.flow import FLOW_ID_HASH
from ovsnvgre.pipeline.stage import set_key

RED, BLUE = 5001, 6001
RED_A, RED_B = "02:00:00:00:50:01", "02:00:00:00:50:02"
PEER_TUNNEL = "gre-cb00710b"
SET_RED_KEY = "set_field:0x138900->tun_id"
OVERLAY = "key_layout: rfc7637, tunnel_ports: per-vsid"
FORWARD, CLASSIFY = table_of("forward"), table_of("classify")


def fabric_text(flow_id: str, mode: str = "per-peer") -> str:
    return TWO_HOSTS.replace(OVERLAY, f"key_layout: rfc7637, tunnel_ports: {mode}, "
                                      f"flow_id: {flow_id}")


def host1_flows(flow_id: str):
    state = desired_host(fabric.loads(fabric_text(flow_id), "f.yaml"), "host1")
    return state, desired_flows(state, set(state.ports))


# --- the flows as text --------------------------------------------------------------


def test_set_key_writes_the_vsid_then_the_hash():
    overlay = fabric.loads(fabric_text("hash"), "f.yaml").overlay
    assert set_key(overlay, RED) == [SET_RED_KEY, FLOW_ID_HASH]
    zero = fabric.loads(fabric_text("zero"), "f.yaml").overlay
    assert set_key(zero, RED) == [SET_RED_KEY]
    # As ovs-ofctl dumps it: 256 links (0-255) into the key's low 8 bits, a symmetric
    # hash of addresses, protocol and TCP/UDP ports.
    assert FLOW_ID_HASH == "multipath(symmetric_l3l4+udp,0,modulo_n,256,0,NXM_NX_TUN_ID[0..7])"


def test_every_frame_into_a_tunnel_gets_the_hash_after_its_vsid():
    _, flows = host1_flows("hash")
    to_tunnel = [f for f in flows if f"output:{PEER_TUNNEL}" in f.actions]
    # Unicast to red-b and blue-b, flooding in Red and in Blue.
    assert len(to_tunnel) == 4
    for flow in to_tunnel:
        before, hashed, after = flow.actions.partition(FLOW_ID_HASH)
        # The key is set, then its low 8 bits hashed, then the frame goes out.
        assert hashed and before.endswith("00->tun_id,"), flow.actions
        assert after == f",output:{PEER_TUNNEL}", flow.actions
    assert ("forward priority=100 dl_dst=02:00:00:00:50:02,reg0=0x1389,reg1=0 actions="
            f"{SET_RED_KEY},{FLOW_ID_HASH},output:{PEER_TUNNEL}") in map(describe, flows)
    # Nothing else hashes: local delivery, and what came from a tunnel.
    assert [f for f in flows if f.hashes_flow_id] == to_tunnel


def test_zero_sends_flow_id_0_and_receive_is_the_same_either_way():
    _, zero = host1_flows("zero")
    _, hashed = host1_flows("hash")
    assert not any(f.hashes_flow_id for f in zero)
    assert ("forward priority=100 dl_dst=02:00:00:00:50:02,reg0=0x1389,reg1=0 actions="
            f"{SET_RED_KEY},output:{PEER_TUNNEL}") in map(describe, zero)
    # The receiver reads the VSID from the top 24 bits whatever a sender hashes.
    assert {f for f in zero if f.table != FORWARD} == {f for f in hashed if f.table != FORWARD}
    assert {f.key for f in zero} == {f.key for f in hashed}


def test_plan_says_the_flow_id_is_hashed():
    _, zero = host1_flows("zero")
    _, hashed = host1_flows("hash")
    lines = FlowChanges("br-int", tuple(hashed)).lines()
    assert (f"flows in table forward of br-int: +{sum(f.table == FORWARD for f in hashed)} -0 "
            "(tunnel keys: VSID << 8 + FlowID hash)") in lines
    assert not any("FlowID" in line for line in lines if "forward" not in line)
    assert not any("FlowID" in line for line in FlowChanges("br-int", tuple(zero)).lines())


def _pcap(path: Path, keys: list[int]) -> Path:
    inner = Ether(src=RED_A, dst=RED_B) / IP(src="10.0.0.1", dst="10.0.0.2") / TCP()
    wrpcap(str(path), [Ether() / IP(src="198.51.100.11", dst="203.0.113.11")
                       / GRE(key_present=1, key=key, proto=0x6558) / inner for key in keys])
    return path


def _wire(flow_id: str, capture: Path) -> wire.WireResult:
    """The lab check's judgement of ``capture`` with ``flow_id``, Red's key expected."""
    fab = fabric.loads(fabric_text(flow_id), "f.yaml")
    return wire.judge(fab, topology.build(fab), {RED << 8}, [capture])


def test_the_labs_wire_check_reads_the_vsid_bits_of_a_hashed_key(tmp_path):
    capture = _pcap(tmp_path / "gre.pcap", [RED << 8 | 0x76, RED << 8 | 0x03])
    hashed = _wire("hash", capture)
    assert hashed.problems == [] and hashed.keys_seen == ["0x138900"]
    assert hashed.flow_ids_seen == 2
    # With flow_id: zero the same packets carry no key of the fabric.
    assert "key 0x138976 is no VSID key of the fabric" in _wire("zero", capture).problems[0]
    # Red's frame (to red-b's MAC) with Blue's VSID in the key: no key of the fabric's
    # for this destination.
    problems = _wire("hash", _pcap(tmp_path / "wrong.pcap", [BLUE << 8 | 0x76])).problems
    assert "key 0x177176 (VSID 6001) carries a frame to red-b (VSID 5001)" in problems[0]
    assert "no GRE packet with key 0x138900 crossed the underlay" in problems


# --- a real switch --------------------------------------------------------------------


@pytest.fixture(scope="module")
def hashing(tmp_path_factory):
    """host1 of the two-host fabric, brought up with flow_id: zero, then switched to hash."""
    with running_lab(tmp_path_factory.mktemp("flow-id")) as lab:
        lab.fabric.write_text(fabric_text("zero"))
        host = lab.host("host1", "198.51.100.11/24", "198.51.100.1")
        result = host.ovsnvgre("up")
        assert result.returncode == 0, result.stderr
        lab.fabric.write_text(fabric_text("hash"))
        planned = host.ovsnvgre("plan")
        assert planned.returncode == 0, planned.stderr
        result = host.ovsnvgre("up")
        assert result.returncode == 0, result.stderr
        yield host, planned.stdout, Tracer(host)


def test_switching_to_hash_is_planned_and_then_converged(hashing):
    host, planned, _ = hashing
    # Only the flows that send into the tunnel change; the ports stay as they are.
    assert "+ flows in table forward of br-int: +4 -0 (tunnel keys: VSID << 8 + FlowID hash)" \
        in planned.splitlines(), planned
    assert "port" not in planned
    # What the switch dumps is what ovsnvgre wants: a re-run writes nothing.
    again = host.ovsnvgre("up")
    assert again.returncode == 0 and "no changes" in again.stdout, again.stdout
    dumped = host.switch.netns.exec("ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-int",
                                    env=host.switch.env).stdout
    assert dumped.count("multipath(symmetric_l3l4+udp,0,modulo_n,256,0,NXM_NX_TUN_ID[0..7])") \
        == 4


def _tcp(tp_src: int, tp_dst: int = 80) -> str:
    return (f"in_port=vnet0,dl_src={RED_A},dl_dst={RED_B},tcp,nw_src=10.0.0.1,"
            f"nw_dst=10.0.0.2,tp_src={tp_src},tp_dst={tp_dst}")


def test_one_flow_one_flow_id_and_flows_spread(hashing):
    _, _, trace = hashing
    keys = {}
    for port in range(40000, 40064):
        outputs = trace(_tcp(port)).outputs
        assert len(outputs) == 1 and outputs[0][0] == PEER_TUNNEL
        keys[port] = outputs[0][1]
    assert {key >> 8 for key in keys.values()} == {RED}  # the VSID bits are untouched
    flow_ids = {key & 0xFF for key in keys.values()}
    assert len(flow_ids) >= 32, sorted(flow_ids)  # 64 flows over 256 values
    # The same flow, traced again, and a UDP flow: one FlowID each, every time.
    assert [trace(_tcp(port)).outputs[0][1] for port in (40000, 40001)] == \
        [keys[40000], keys[40001]]
    udp = (f"in_port=vnet0,dl_src={RED_A},dl_dst={RED_B},udp,nw_src=10.0.0.1,"
           "nw_dst=10.0.0.2,udp_src=5353,udp_dst=53")
    assert len({trace(udp).outputs[0][1] for _ in range(3)}) == 1


def test_flooded_frames_and_arp_get_one_flow_id_each(hashing):
    _, _, trace = hashing
    arp = (f"in_port=vnet0,dl_src={RED_A},dl_dst=ff:ff:ff:ff:ff:ff,arp,arp_op=1,"
           f"arp_spa=10.0.0.1,arp_tpa=10.0.0.77,arp_sha={RED_A}")
    broadcast = (f"in_port=vnet0,dl_src={RED_A},dl_dst=ff:ff:ff:ff:ff:ff,udp,"
                 "nw_src=10.0.0.1,nw_dst=10.0.0.255,udp_src=68,udp_dst=67")
    for frame in (arp, broadcast):
        keys = {tun for _ in range(2) for port, tun in trace(frame).outputs
                if port == PEER_TUNNEL}
        assert len(keys) == 1 and next(iter(keys)) >> 8 == RED, keys


def test_trace_status_and_validate_say_the_flow_id_is_hashed(hashing):
    host, _, trace = hashing
    result = host.ovsnvgre("trace", "--from", "red-a", "--to", "red-b", "--proto", "tcp:80",
                           "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    flow_id = trace(data["flow"]).outputs[0][1] & 0xFF
    assert data["verdict"] == (
        f"delivered to red-b via tunnel to host2 with key 0x138900 + FlowID hash "
        f"({flow_id:#x} for this packet) (port {PEER_TUNNEL})")
    assert data["outputs"] == [{"kind": "tunnel", "port": PEER_TUNNEL, "peer": "host2",
                                "key": f"{RED << 8 | flow_id:#x}", "vsid": RED,
                                "flow_id": "hash"}]
    status = host.ovsnvgre("status", "--json")
    tunnels = json.loads(status.stdout)["tunnels"]
    assert [(t["key"], t["flow_id"]) for t in tunnels] == [("flow", "hash")]
    assert "flow + FlowID hash" in host.ovsnvgre("status").stdout
    valid = host.ovsnvgre("validate", host=None)
    assert "(netdev datapath, rfc7637 keys + FlowID hash, per-peer tunnel ports)" in valid.stdout


def test_the_flow_port_carries_the_hash_too(tmp_path):
    """tunnel_ports: flow also takes the key from the flow: the peer's PA, the key, its
    hashed FlowID, and what trace and status say of it, on a real switch."""
    with running_lab(tmp_path) as lab:
        lab.fabric.write_text(fabric_text("hash", "flow"))
        host = lab.host("host1", "198.51.100.11/24", "198.51.100.1")
        assert host.ovsnvgre("up").returncode == 0
        again = host.ovsnvgre("up")
        assert again.returncode == 0 and "no changes" in again.stdout, again.stdout
        trace = Tracer(host)
        keys = {trace(_tcp(port)).outputs[0] for port in range(40000, 40016)}
        assert {port for port, _ in keys} == {"gre-flow"}
        assert {key >> 8 for _, key in keys} == {RED} and len(keys) >= 4, keys
        result = host.ovsnvgre("trace", "--from", "red-a", "--to", "red-b", "--proto",
                               "tcp:80", "--json")
        data = json.loads(result.stdout)
        flow_id = int(data["outputs"][0]["key"], 16) & 0xFF
        assert data["verdict"] == (
            "delivered to red-b via tunnel to host2 (tun_dst 203.0.113.11) with key "
            f"0x138900 + FlowID hash ({flow_id:#x} for this packet) (port gre-flow)")
        tunnels = json.loads(host.ovsnvgre("status", "--json").stdout)["tunnels"]
        assert [(t["peer"], t["key"], t["flow_id"], t["state"]) for t in tunnels] == [
            ("host2", "0x138900", "hash", "up"), ("host2", "0x177100", "hash", "up")]
        assert "0x138900 + FlowID hash" in host.ovsnvgre("status").stdout


# --- packets on the wire: 16 TCP connections between the same two VMs -----------------

SERVER = """\
import socket, sys
address, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((address, port))
server.listen(count)
server.settimeout(60)
print("listening", flush=True)
for _ in range(count):
    connection, _ = server.accept()
    connection.settimeout(30)
    with connection:
        while data := connection.recv(65536):
            connection.sendall(data)
"""

# Each connection: 32 KiB there and back (dozens of segments each way), then closed;
# prints the client's source ports, one per connection.
CLIENT = """\
import json, socket, sys
address, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
payload = bytes(range(256)) * 128
ports = []
for _ in range(count):
    with socket.create_connection((address, port), timeout=20) as connection:
        ports.append(connection.getsockname()[1])
        connection.sendall(payload)
        connection.shutdown(socket.SHUT_WR)
        echoed = b""
        while chunk := connection.recv(65536):
            echoed += chunk
    if echoed != payload:
        sys.exit(f"connection from port {ports[-1]}: {len(echoed)} of {len(payload)} bytes")
print(json.dumps(ports))
"""
CONNECTIONS, SERVER_PORT = 16, 5301


def connections(client, server, tmp_path: Path, host) -> tuple[list[int], list]:
    """16 TCP connections from ``client`` to ``server`` while host's uplink is captured:
    the client's source ports, and every GRE packet that crossed the underlay."""
    listener = subprocess.Popen(["ip", "netns", "exec", server.netns.name, sys.executable,
                                 "-I", "-c", SERVER, server.ca, str(SERVER_PORT),
                                 str(CONNECTIONS)], cwd="/", stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        assert listener.stdout is not None
        assert "listening" in listener.stdout.readline()
        with Capture(host, tmp_path / "tcp.pcap") as capture:
            done = client.netns.exec(sys.executable, "-I", "-c", CLIENT, server.ca,
                                     str(SERVER_PORT), str(CONNECTIONS), check=False)
            _settle(capture.path, json.loads(done.stdout or "[]"))
        assert done.returncode == 0, done.stderr
        listener.wait(timeout=30)
    finally:
        listener.kill()
        listener.wait()
    return json.loads(done.stdout), gre_packets(capture.path)


def _settle(path: Path, ports: list[int], limit: float = 20.0) -> None:
    """Wait until tcpdump has written what it saw: every connection's packets, and the
    file no longer growing (on a busy machine it writes the last connections seconds
    later, and a stopped tcpdump drops what it has not written yet)."""
    deadline = time.monotonic() + limit
    size = -1
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = path.stat().st_size
        if now == size and set(_by_connection(gre_packets(path))) >= set(ports):
            return
        size = now


def _by_connection(packets) -> dict[int, list]:
    """The GRE packets of each test connection (both ways), by the client's port."""
    found: dict[int, list] = defaultdict(list)
    for packet in packets:
        inner = Ether(packet.inner)
        if TCP not in inner or SERVER_PORT not in (inner[TCP].sport, inner[TCP].dport):
            continue  # the VMs' own IPv6 chatter
        client_port = inner[TCP].dport if inner[TCP].sport == SERVER_PORT else inner[TCP].sport
        found[client_port].append(packet)
    return found


def flow_ids_by_connection(packets, ports: list[int]) -> dict[int, set[int]]:
    """The FlowIDs each connection (by the client's source port) carried, both ways;
    asserts that every GRE packet carries Red's VSID in the key's top 24 bits."""
    for packet in packets:
        assert packet.key is not None and packet.key >> 8 == RED, f"{packet.key:#x}"
    found = _by_connection(packets)
    assert set(found) == set(ports)  # every connection crossed the underlay
    return {port: {packet.key & 0xFF for packet in found[port]} for port in ports}


def test_sixteen_connections_spread_over_flow_ids_each_keeping_one(lab, tmp_path):
    lab.fabric.write_text(fabric_text("zero"))
    host1 = lab.host("host1", "198.51.100.11/24", "198.51.100.1")
    host2 = lab.host("host2", "203.0.113.11/24", "203.0.113.1")
    red_a = lab.vm(host1, "vnet0", RED_A, "10.0.0.1/24")
    red_b = lab.vm(host2, "vnet0", RED_B, "10.0.0.2/24")
    for host in (host1, host2):
        result = host.ovsnvgre("up")
        assert result.returncode == 0, result.stderr
    assert red_a.ping("10.0.0.2")  # ARP and the underlay next hops are resolved
    # flow_id: zero, the default: every key is the VSID with FlowID 0 (RFC 7637 3.2).
    ports, packets = connections(red_a, red_b, tmp_path, host1)
    assert set().union(*flow_ids_by_connection(packets, ports).values()) == {0}

    lab.fabric.write_text(fabric_text("hash"))
    for host in (host1, host2):
        result = host.ovsnvgre("up")
        assert result.returncode == 0, result.stderr
    ports, packets = connections(red_a, red_b, tmp_path, host1)
    by_connection = flow_ids_by_connection(packets, ports)
    # Each connection one FlowID throughout, both directions (the hash is symmetric,
    # and both hosts compute it the same way) ...
    assert all(len(flow_ids) == 1 for flow_ids in by_connection.values()), by_connection
    # ... and the 16 connections spread: at least 4 FlowIDs on the wire.
    distinct = set().union(*by_connection.values())
    assert len(distinct) >= 4, sorted(distinct)
