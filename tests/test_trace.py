"""Each pipeline behaviour, checked exactly with ofproto/trace on a real switch."""

from __future__ import annotations

import json

import pytest
from conftest import running_lab
from fabrics import TWO_HOSTS

from ovsnvgre.trace import Parsed, parse

RED_A, BLUE_A, RED_C = "02:00:00:00:50:01", "02:00:00:00:60:01", "02:00:00:00:50:03"
RED_B, BLUE_B = "02:00:00:00:50:02", "02:00:00:00:60:02"
RED_TUNNEL, BLUE_TUNNEL, PEER_TUNNEL = "gcb00710b001389", "gcb00710b001771", "gre-cb00710b"
FLOW_TUNNEL, HOST2_PA = "gre-flow", "203.0.113.11"
TRACE_FABRIC = TWO_HOSTS + ('  red-c:  {host: host1, subnet: red,  port: vnet2, '
                            f'mac: "{RED_C}", ca: 10.0.0.3/24}}\n')


class Tracer:
    """ofproto/trace through the product's own parser (its output checked here exactly)."""

    def __init__(self, host) -> None:
        self.host = host
        # OpenFlow port numbers are per bridge: map only br-int's.
        ports = host.switch.vsctl("list-ports", "br-int").split()
        self.names = {int(host.switch.vsctl("get", "interface", port, "ofport")): port
                      for port in ports}

    def __call__(self, flow: str) -> Parsed:
        return parse(self.host.switch.appctl("ofproto/trace", "br-int", flow), self.names)


def _vm_flow(port: str, mac: str, ca: str, rest: str) -> str:
    return f"in_port={port},dl_src={mac},{rest}".replace("CA", ca)


@pytest.fixture(scope="module",
                params=[("per-vsid", "rfc7637"), ("per-peer", "rfc7637"), ("per-peer", "plain"),
                        ("flow", "rfc7637")],
                ids=["per-vsid", "per-peer", "per-peer-plain", "flow"])
def traced(request, tmp_path_factory):
    """One configured host per mode, shared by the traces (a trace changes nothing)."""
    mode, layout = request.param
    with running_lab(tmp_path_factory.mktemp("trace")) as lab:
        yield _configure(lab, mode, layout)


def _configure(lab, mode: str, layout: str):
    lab.fabric.write_text(TRACE_FABRIC.replace("tunnel_ports: per-vsid", f"tunnel_ports: {mode}")
                          .replace("key_layout: rfc7637", f"key_layout: {layout}"))
    host = lab.host("host1", "198.51.100.11/24", "198.51.100.1",
                    vm_ports=("vnet0", "vnet1", "vnet2"))
    result = host.ovsnvgre("up")
    assert result.returncode == 0, result.stderr
    return Tracer(host), mode, layout


def key_port(mode: str) -> str:
    """The port that takes its key from the flow: per peer, or the one flow port."""
    return FLOW_TUNNEL if mode == "flow" else PEER_TUNNEL


def red_out(mode: str, layout: str) -> tuple[str, int | None]:
    if mode == "per-vsid":
        return (RED_TUNNEL, None)
    return (key_port(mode), 5001 << 8 if layout == "rfc7637" else 5001)


def red_in(mode: str, layout: str, flow_id: int = 0, source: str = HOST2_PA) -> str:
    if mode == "per-vsid":
        return f"in_port={RED_TUNNEL}"
    key = (5001 << 8 | flow_id) if layout == "rfc7637" else 5001
    # The flow port takes frames from any PA: the outer source says which peer sent it.
    peer = f",tun_src={source}" if mode == "flow" else ""
    return f"in_port={key_port(mode)}{peer},tun_id={key:#x}"


def test_known_unicast_goes_straight_to_its_port_or_tunnel(traced):
    trace, mode, layout = traced
    to_remote = trace(f"in_port=vnet0,dl_src={RED_A},dl_dst={RED_B},ip,nw_src=10.0.0.1,"
                      "nw_dst=10.0.0.2")
    assert to_remote.outputs == [red_out(mode, layout)]
    to_local = trace(f"in_port=vnet0,dl_src={RED_A},dl_dst={RED_C},ip,nw_src=10.0.0.1,"
                     "nw_dst=10.0.0.3")
    assert to_local.outputs == [("vnet2", None)]
    from_tunnel = trace(f"{red_in(mode, layout)},dl_src={RED_B},dl_dst={RED_A},ip,"
                        "nw_src=10.0.0.2,nw_dst=10.0.0.1")
    assert from_tunnel.ports == {"vnet0"}


def test_bum_floods_within_the_vsid_only(traced):
    trace, mode, layout = traced
    broadcast = trace(f"in_port=vnet0,dl_src={RED_A},dl_dst=ff:ff:ff:ff:ff:ff,ip,"
                      "nw_src=10.0.0.1,nw_dst=10.0.0.255")
    assert set(broadcast.outputs) == {("vnet2", None), red_out(mode, layout)}
    assert "vnet1" not in broadcast.ports and BLUE_TUNNEL not in broadcast.ports
    unknown = trace(f"in_port=vnet1,dl_src={BLUE_A},dl_dst=02:00:00:00:99:99,ip,"
                    "nw_src=10.0.0.1,nw_dst=10.0.0.99")
    assert "vnet0" not in unknown.ports and "vnet2" not in unknown.ports
    assert RED_TUNNEL not in unknown.ports
    blue_key = [tun for port, tun in unknown.outputs if port == key_port(mode)]
    assert blue_key in ([], [6001 << 8], [6001])


def test_split_horizon_nothing_from_a_tunnel_goes_back_into_one(traced):
    trace, mode, layout = traced
    flood = trace(f"{red_in(mode, layout)},dl_src={RED_B},dl_dst=ff:ff:ff:ff:ff:ff,ip,"
                  "nw_src=10.0.0.2,nw_dst=10.0.0.255")
    assert flood.ports == {"vnet0", "vnet2"}
    to_remote = trace(f"{red_in(mode, layout)},dl_src={RED_B},dl_dst={RED_B},ip,"
                      "nw_src=10.0.0.2,nw_dst=10.0.0.2")
    assert to_remote.outputs == []
    # A red frame for a blue VM's MAC stays in red (and so never reaches blue-a).
    cross = trace(f"{red_in(mode, layout)},dl_src={RED_B},dl_dst={BLUE_A},ip,"
                  "nw_src=10.0.0.2,nw_dst=10.0.0.1")
    assert "vnet1" not in cross.ports
    # Multicast from a tunnel (IPv6 neighbour discovery) reaches the local ports too.
    multicast = trace(f"{red_in(mode, layout)},dl_src={RED_B},dl_dst=33:33:00:00:00:01,"
                      "ipv6,ipv6_src=fe80::2,ipv6_dst=ff02::1")
    assert multicast.ports == {"vnet0", "vnet2"}
    # Unicast for a MAC that no VM here has is for nobody here: dropped, whether the
    # MAC is a remote VM's (above) or none of the fabric's.
    unknown = trace(f"{red_in(mode, layout)},dl_src={RED_B},dl_dst=02:00:00:00:99:99,ip,"
                    "nw_src=10.0.0.2,nw_dst=10.0.0.99")
    assert unknown.outputs == []


def test_arp_responder_answers_known_cas_in_the_askers_vsid(traced):
    trace, _, _ = traced
    red = trace(f"in_port=vnet0,dl_src={RED_A},dl_dst=ff:ff:ff:ff:ff:ff,arp,arp_op=1,"
                f"arp_spa=10.0.0.1,arp_tpa=10.0.0.2,arp_sha={RED_A}")
    assert red.outputs == [("vnet0", None)]
    assert f"arp_op=2,arp_sha={RED_B}" in red.final_flow
    blue = trace(f"in_port=vnet1,dl_src={BLUE_A},dl_dst=ff:ff:ff:ff:ff:ff,arp,arp_op=1,"
                 f"arp_spa=10.0.0.1,arp_tpa=10.0.0.2,arp_sha={BLUE_A}")
    assert blue.outputs == [("vnet1", None)]
    assert f"arp_sha={BLUE_B}" in blue.final_flow  # same CA, the other tenant's VM


def test_arp_for_unknown_or_own_address_is_flooded_in_the_vsid(traced):
    trace, mode, layout = traced
    for target in ("10.0.0.77", "10.0.0.1"):
        flood = trace(f"in_port=vnet0,dl_src={RED_A},dl_dst=ff:ff:ff:ff:ff:ff,arp,arp_op=1,"
                      f"arp_spa=10.0.0.1,arp_tpa={target},arp_sha={RED_A}")
        assert "vnet2" in flood.ports and red_out(mode, layout) in flood.outputs
        assert "arp_op=1" in flood.final_flow and "vnet1" not in flood.ports


@pytest.mark.parametrize("flow", [
    f"in_port=vnet0,dl_src=02:00:00:00:50:99,dl_dst={RED_B},ip,nw_src=10.0.0.1,nw_dst=10.0.0.2",
    f"in_port=vnet0,dl_src={RED_A},dl_dst={RED_B},ip,nw_src=10.0.0.9,nw_dst=10.0.0.2",
    f"in_port=vnet0,dl_src={RED_A},dl_dst=ff:ff:ff:ff:ff:ff,arp,arp_op=1,arp_spa=10.0.0.9,"
    f"arp_tpa=10.0.0.2,arp_sha={RED_A}",
    f"in_port=vnet0,dl_src={RED_A},dl_dst=ff:ff:ff:ff:ff:ff,arp,arp_op=1,arp_spa=10.0.0.1,"
    "arp_tpa=10.0.0.2,arp_sha=02:00:00:00:50:99",
    f"in_port=vnet0,dl_src={RED_A},dl_dst={RED_B},ipv6,ipv6_src=2001:db8::1,ipv6_dst=2001:db8::2",
    f"in_port=LOCAL,dl_src={RED_A},dl_dst={RED_B},ip,nw_src=10.0.0.1,nw_dst=10.0.0.2",
], ids=["forged-mac", "forged-ip", "forged-arp-ip", "forged-arp-mac", "foreign-ipv6",
        "unknown-port"])
def test_forged_or_unclassified_frames_are_dropped(traced, flow):
    trace, _, _ = traced
    assert trace(flow).outputs == []


def test_ipv6_link_local_and_neighbour_discovery_pass(traced):
    trace, mode, layout = traced
    nd = trace(f"in_port=vnet0,dl_src={RED_A},dl_dst=33:33:00:00:00:01,icmp6,"
               "ipv6_src=fe80::1,ipv6_dst=ff02::1,icmpv6_type=135")
    dad = trace(f"in_port=vnet0,dl_src={RED_A},dl_dst=33:33:ff:00:00:01,icmp6,"
                "ipv6_src=::,ipv6_dst=ff02::1:ff00:1,icmpv6_type=135")
    for result in (nd, dad):
        assert "vnet2" in result.ports and red_out(mode, layout) in result.outputs


def test_tunnel_keys_are_checked(traced):
    trace, mode, layout = traced
    if mode == "per-vsid":
        # The port carries the key (OVS matches it on receive): the port decides the VSID.
        blue = trace(f"in_port={BLUE_TUNNEL},dl_src={BLUE_B},dl_dst=ff:ff:ff:ff:ff:ff,ip,"
                     "nw_src=10.0.0.2,nw_dst=10.0.0.255")
        assert blue.ports == {"vnet1"}
        return
    unknown = 7001 << 8 if layout == "rfc7637" else 7001
    peer = f",tun_src={HOST2_PA}" if mode == "flow" else ""
    dropped = trace(f"in_port={key_port(mode)}{peer},tun_id={unknown:#x},dl_src={RED_B},"
                    "dl_dst=ff:ff:ff:ff:ff:ff,ip,nw_src=10.0.0.2,nw_dst=10.0.0.255")
    assert dropped.outputs == []
    if mode == "flow":
        # A right key from a PA that is no peer's (here no host of the fabric): dropped.
        for source in ("203.0.113.12", "198.51.100.11"):
            stranger = trace(f"{red_in(mode, layout, source=source)},dl_src={RED_B},"
                             "dl_dst=ff:ff:ff:ff:ff:ff,ip,nw_src=10.0.0.2,nw_dst=10.0.0.255")
            assert stranger.outputs == [] and stranger.last_table == 0, source
    if layout == "rfc7637":
        # A receiver reads the VSID from the top 24 bits only: the FlowID is ignored.
        with_flow_id = trace(f"{red_in(mode, layout, flow_id=0x5a)},dl_src={RED_B},"
                             "dl_dst=ff:ff:ff:ff:ff:ff,ip,nw_src=10.0.0.2,nw_dst=10.0.0.255")
        assert with_flow_id.ports == {"vnet0", "vnet2"}


# --- `ovsnvgre trace`: the same switch, in the fabric's words -------------------------


def verdict(traced, *args: str) -> str:
    trace, _, _ = traced
    result = trace.host.ovsnvgre("trace", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_trace_command_names_the_tunnel_and_key(traced):
    _, mode, layout = traced
    key = 5001 << 8 if layout == "rfc7637" else 5001
    port = RED_TUNNEL if mode == "per-vsid" else key_port(mode)
    via = f" (tun_dst {HOST2_PA})" if mode == "flow" else ""
    assert verdict(traced, "--from", "red-a", "--to", "10.0.0.2") == (
        f"delivered to red-b via tunnel to host2{via} with key {key:#x} (port {port})")
    assert verdict(traced, "--from", "red-a", "--to", "red-b", "--proto", "tcp:80") == (
        f"delivered to red-b via tunnel to host2{via} with key {key:#x} (port {port})")


def test_trace_command_json_names_the_peer_of_every_tunnel_output(traced):
    trace, mode, layout = traced
    key = 5001 << 8 if layout == "rfc7637" else 5001
    result = trace.host.ovsnvgre("trace", "--from", "red-a", "--to", "10.0.0.77", "--json")
    data = json.loads(result.stdout)
    tunnel = next(o for o in data["outputs"] if o["kind"] == "tunnel")
    assert tunnel == {**tunnel, "peer": "host2", "key": f"{key:#x}", "vsid": 5001,
                      "port": RED_TUNNEL if mode == "per-vsid" else key_port(mode)}
    # The flow port serves every peer: the PA the flow set says which.
    assert tunnel.get("tun_dst") == (HOST2_PA if mode == "flow" else None)
    if mode == "flow":
        assert (f"tunnel to host2 (tun_dst {HOST2_PA}, key {key:#x}, port gre-flow)"
                in data["verdict"])


def test_trace_command_local_arp_cross_vsid_and_unknown(traced):
    assert verdict(traced, "--from", "red-a", "--to", "red-c") == \
        "delivered to red-c on port vnet2"
    assert verdict(traced, "--from", "red-a", "--to", "10.0.0.2", "--proto", "arp") == \
        f"answered by the ARP responder: 10.0.0.2 is at {RED_B} (red-b)"
    assert verdict(traced, "--from", "blue-a", "--to", "10.0.0.2", "--proto", "arp") == \
        f"answered by the ARP responder: 10.0.0.2 is at {BLUE_B} (blue-b)"
    assert verdict(traced, "--from", "red-a", "--to", "blue-b").startswith(
        "dropped: different virtual subnet (blue-b is in VSID 6001, red-a in 5001)")
    flooded = verdict(traced, "--from", "red-a", "--to", "10.0.0.77")
    assert flooded.startswith("flooded within VSID 5001: ") and "red-c (port vnet2)" in flooded
    assert "blue" not in flooded


def test_trace_command_json_and_raw(traced):
    trace, mode, _ = traced
    result = trace.host.ovsnvgre("trace", "--from", "red-a", "--to", "red-c", "--json",
                                 "--raw")
    data = json.loads(result.stdout)
    assert data["verdict"] == "delivered to red-c on port vnet2"
    assert data["outputs"] == [{"kind": "vm", "port": "vnet2", "vm": "red-c"}]
    assert data["from"] == "red-a" and data["destination"] == "red-c"
    assert data["flow"].startswith(f"in_port=vnet0,dl_src={RED_A},dl_dst={RED_C},icmp")
    assert "Datapath actions" in data["raw"]


@pytest.mark.parametrize("args, message", [
    (["--from", "nobody", "--to", "10.0.0.2"], "no VM 'nobody' in the fabric"),
    (["--from", "red-a", "--to", "10.0.0.2", "--proto", "sctp"], "--proto 'sctp'"),
    (["--from", "red-a", "--to", "10.0.0.2", "--proto", "tcp"], "--proto 'tcp'"),
    (["--from", "red-a", "--to", "somewhere"], "neither a VM of the fabric nor an IP"),
    (["--from", "red-b", "--to", "10.0.0.1"], "VM red-b is on host host2, not host1"),
])
def test_trace_command_usage_errors(traced, args, message):
    trace, _, _ = traced
    result = trace.host.ovsnvgre("trace", *args)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_trace_command_takes_udp(traced):
    # ofproto/trace reads tp_dst as tcp_dst: a UDP probe names udp_dst.
    _, mode, layout = traced
    key = 5001 << 8 if layout == "rfc7637" else 5001
    port = RED_TUNNEL if mode == "per-vsid" else key_port(mode)
    via = f" (tun_dst {HOST2_PA})" if mode == "flow" else ""
    assert verdict(traced, "--from", "red-a", "--to", "red-b", "--proto", "udp:53") == (
        f"delivered to red-b via tunnel to host2{via} with key {key:#x} (port {port})")
