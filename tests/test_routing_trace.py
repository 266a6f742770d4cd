"""The distributed router on a real switch: every verdict with ofproto/trace (issue 18),
in each tunnel mode and key layout, and `ovsnvgre trace`'s sentences for them.

host1 of tests/fabrics.py's ROUTED: web-a (contoso web, vnet0), db-a (contoso db,
vnet1), other-a (fabrikam other, vnet2), flat-a (L2-only, vnet3, at 10.1.1.1).
"""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
from conftest import running_lab
from fabrics import ROUTED
from json_contract import STATUS
from test_trace import Tracer

from ovsnvgre.pipeline import table_of

ROUTER = "02:00:5e:00:01:01"
WEB_A, DB_A, OTHER_A, FLAT_A = ("02:00:00:00:51:01", "02:00:00:00:52:01", "02:00:00:00:61:01",
                                "02:00:00:00:71:01")
DB_B, APP_B, DATA_B = "02:00:00:00:52:02", "02:00:00:00:53:02", "02:00:00:00:62:02"
PEER = "gre-cb00710b"  # host2's PA 203.0.113.11 in hex
MODES = [("per-vsid", "rfc7637"), ("per-peer", "rfc7637"), ("per-vsid", "plain"),
         ("per-peer", "plain"), ("flow", "rfc7637")]


@pytest.fixture(scope="module", params=MODES, ids=[f"{m}-{k}" for m, k in MODES])
def traced(request, tmp_path_factory):
    """host1 configured by `ovsnvgre up` in one mode and layout (a trace changes nothing)."""
    mode, layout = request.param
    with running_lab(tmp_path_factory.mktemp("routing")) as lab:
        lab.fabric.write_text(ROUTED.replace("tunnel_ports: per-vsid", f"tunnel_ports: {mode}")
                              .replace("key_layout: rfc7637", f"key_layout: {layout}"))
        host = lab.host("host1", "198.51.100.11/24", "198.51.100.1",
                        vm_ports=("vnet0", "vnet1", "vnet2", "vnet3"))
        result = host.ovsnvgre("up")
        assert result.returncode == 0, result.stderr
        yield Tracer(host), mode, layout


def key_of(vsid: int, layout: str) -> int:
    return vsid << 8 if layout == "rfc7637" else vsid


def to_router(port: str, mac: str, src: str, dst: str, rest: str = "icmp,icmp_type=8",
              ttl: int = 64) -> str:
    return (f"in_port={port},dl_src={mac},dl_dst={ROUTER},{rest},nw_src={src},nw_dst={dst},"
            f"nw_ttl={ttl}")


def tunnel_out(traced, vsid: int) -> tuple[str, int | None]:
    """Where a frame of ``vsid`` to host2 goes: its fixed-key port, or the peer port (or
    the flow port) with the key set by the flow; the fixed port's key checked on the
    switch."""
    trace, mode, layout = traced
    if mode == "per-peer":
        return (PEER, key_of(vsid, layout))
    if mode == "flow":
        return ("gre-flow", key_of(vsid, layout))
    port = f"gcb00710b{vsid:06x}"
    key = trace.host.switch.vsctl("get", "interface", port, "options:key").strip().strip('"')
    assert int(key) == key_of(vsid, layout)
    return (port, None)


def test_routed_to_a_local_vm_of_another_subnet(traced):
    trace, _, _ = traced
    result = trace(to_router("vnet0", WEB_A, "10.1.1.10", "10.1.2.10"))
    assert result.outputs == [("vnet1", None)]
    # TTL decremented, source MAC the router's, destination MAC db-a's.
    assert f"dl_src={ROUTER},dl_dst={DB_A}" in result.final_flow
    assert "nw_ttl=63" in result.final_flow


@pytest.mark.parametrize("dst,vsid,mac", [("10.1.2.20", 5002, DB_B), ("10.1.3.20", 5003, APP_B)],
                         ids=["db-b (db has a VM here)", "app-b (app has none here)"])
def test_routed_through_the_tunnel_with_the_destination_vsids_key(traced, dst, vsid, mac):
    trace, _, _ = traced
    result = trace(to_router("vnet0", WEB_A, "10.1.1.10", dst, "tcp,tp_dst=80"))
    assert result.outputs == [tunnel_out(traced, vsid)]
    assert f"dl_src={ROUTER},dl_dst={mac}" in result.final_flow
    assert "nw_ttl=63" in result.final_flow


def test_overlapping_prefixes_are_looked_up_in_the_sources_domain(traced):
    trace, _, _ = traced
    contoso = trace(to_router("vnet0", WEB_A, "10.1.1.10", "10.1.2.20"))
    fabrikam = trace(to_router("vnet2", OTHER_A, "10.1.1.10", "10.1.2.20"))
    assert contoso.outputs == [tunnel_out(traced, 5002)] and f"dl_dst={DB_B}" in \
        contoso.final_flow
    assert fabrikam.outputs == [tunnel_out(traced, 6002)] and f"dl_dst={DATA_B}" in \
        fabrikam.final_flow


def test_the_gateway_answers_arp_from_its_own_subnet_only(traced):
    trace, _, _ = traced
    arp = "dl_dst=ff:ff:ff:ff:ff:ff,arp,arp_op=1"
    answer = trace(f"in_port=vnet0,dl_src={WEB_A},{arp},arp_spa=10.1.1.10,arp_tpa=10.1.1.1,"
                   f"arp_sha={WEB_A}")
    assert answer.outputs == [("vnet0", None)]
    assert f"dl_src={ROUTER},dl_dst={WEB_A}" in answer.final_flow
    assert f"arp_spa=10.1.1.1,arp_tpa=10.1.1.10,arp_op=2,arp_sha={ROUTER}" in answer.final_flow
    # db's gateway is not on web's subnet: not answered, and never leaves the host.
    other_gateway = trace(f"in_port=vnet0,dl_src={WEB_A},{arp},arp_spa=10.1.1.10,"
                          f"arp_tpa=10.1.2.1,arp_sha={WEB_A}")
    assert other_gateway.outputs == []
    # The L2-only VM at 10.1.1.1 is asked for its own address by nobody but itself:
    # fabrikam's other-a gets fabrikam's gateway, not flat-a.
    fabrikam = trace(f"in_port=vnet2,dl_src={OTHER_A},{arp},arp_spa=10.1.1.10,"
                     f"arp_tpa=10.1.1.1,arp_sha={OTHER_A}")
    assert fabrikam.outputs == [("vnet2", None)] and f"arp_sha={ROUTER}" in fabrikam.final_flow


def test_the_router_answers_ping_to_every_gateway_of_the_domain(traced):
    trace, _, _ = traced
    for gateway in ("10.1.1.1", "10.1.2.1", "10.1.3.1"):
        result = trace(to_router("vnet0", WEB_A, "10.1.1.10", gateway))
        assert result.outputs == [("vnet0", None)], gateway
        assert f"dl_src={ROUTER},dl_dst={WEB_A}" in result.final_flow
        assert f"nw_src={gateway},nw_dst=10.1.1.10" in result.final_flow
        assert "icmp_type=0" in result.final_flow
    # Even with TTL 1: the packet is for the router itself.
    assert trace(to_router("vnet0", WEB_A, "10.1.1.10", "10.1.2.1", ttl=1)).outputs == [
        ("vnet0", None)]


def test_no_answer_for_a_vm_outside_the_domain(traced):
    trace, _, _ = traced
    # fabrikam has no 10.1.3.0/24: contoso's app gateway is no address of its router.
    outside = trace(to_router("vnet2", OTHER_A, "10.1.1.10", "10.1.3.1"))
    assert outside.outputs == [] and outside.last_table == table_of("route")
    # The L2-only VM's frames to the router's MAC are ordinary frames of its VSID.
    flat = trace(to_router("vnet3", FLAT_A, "10.1.1.1", "10.1.2.1"))
    assert "vnet3" not in flat.ports and flat.last_table == table_of("forward")
    assert not any(port.startswith("g") for port in flat.ports)


def test_other_ip_to_a_gateway_is_dropped(traced):
    trace, _, _ = traced
    result = trace(to_router("vnet0", WEB_A, "10.1.1.10", "10.1.1.1", "tcp,tp_dst=22"))
    assert result.outputs == [] and result.last_table == table_of("gateway")


@pytest.mark.parametrize("ttl", [1, 0])
def test_ttl_1_or_0_is_dropped_on_the_source_host(traced, ttl):
    trace, _, _ = traced
    result = trace(to_router("vnet0", WEB_A, "10.1.1.10", "10.1.2.20", ttl=ttl))
    assert result.outputs == [] and result.last_table == table_of("ttl")
    assert trace(to_router("vnet0", WEB_A, "10.1.1.10", "10.1.2.20", ttl=2)).outputs != []


@pytest.mark.parametrize("port,mac,src,dst", [
    ("vnet2", OTHER_A, "10.1.1.10", "10.1.3.20"),   # app-b's address: contoso's only
    ("vnet0", WEB_A, "10.1.1.10", "10.9.9.9"),       # in no subnet of contoso
    ("vnet0", WEB_A, "10.1.1.10", "10.1.2.99"),      # in db's prefix, no VM has it
], ids=["other routing domain", "no subnet", "no VM"])
def test_a_destination_outside_the_domain_is_dropped_on_the_source_host(traced, port, mac, src,
                                                                        dst):
    trace, _, _ = traced
    result = trace(to_router(port, mac, src, dst))
    assert result.outputs == [] and result.last_table == table_of("route")


@pytest.mark.parametrize("flow", [
    to_router("vnet0", WEB_A, "10.1.1.99", "10.1.2.20"),           # another source address
    to_router("vnet0", "02:00:00:00:51:99", "10.1.1.10", "10.1.2.20"),  # another MAC
    to_router("vnet0", DB_A, "10.1.2.10", "10.1.2.20"),            # db-a on web-a's port
], ids=["address", "mac", "another VM's identity"])
def test_spoofed_routed_frames_are_dropped_by_classify(traced, flow):
    trace, _, _ = traced
    result = trace(flow)
    assert result.outputs == [] and result.last_table == table_of("classify")


def verdict(traced, *args: str) -> str:
    trace, _, _ = traced
    result = trace.host.ovsnvgre("trace", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_trace_command_says_routed_and_the_destination_key(traced):
    _, mode, layout = traced
    # The flow port serves every peer: the verdict names the PA the flow set.
    via = " (tun_dst 203.0.113.11)" if mode == "flow" else ""
    assert verdict(traced, "--from", "web-a", "--to", "10.1.2.20") == (
        f"routed by contoso's distributed router to db-b (10.1.2.20) via tunnel to host2{via} "
        f"with key {key_of(5002, layout):#x}")
    assert verdict(traced, "--from", "web-a", "--to", "db-a", "--proto", "tcp:5432") == (
        "routed by contoso's distributed router to db-a (10.1.2.10) on port vnet1")
    assert verdict(traced, "--from", "other-a", "--to", "10.1.2.20") == (
        f"routed by fabrikam's distributed router to data-b (10.1.2.20) via tunnel to host2{via} "
        f"with key {key_of(6002, layout):#x}")
    # Named across domains: the address means contoso's VM to contoso's router.
    assert verdict(traced, "--from", "web-a", "--to", "data-b") == (
        f"routed by contoso's distributed router to db-b (10.1.2.20) via tunnel to host2{via} "
        f"with key {key_of(5002, layout):#x}; data-b is in routing domain fabrikam, "
        "unreachable from contoso")


def test_trace_command_says_what_the_gateway_answers(traced):
    assert verdict(traced, "--from", "web-a", "--to", "10.1.1.1", "--proto", "arp") == (
        f"answered by contoso's distributed router: 10.1.1.1 is at {ROUTER} (the gateway of "
        "web)")
    assert verdict(traced, "--from", "web-a", "--to", "10.1.3.1") == (
        "answered by contoso's distributed router: 10.1.3.1 (the gateway of app) replies to "
        "the ping")
    assert verdict(traced, "--from", "web-a", "--to", "10.1.1.1", "--proto", "tcp:22") == (
        "dropped by gateway: the distributed router answers only ARP and ICMP echo (ping) "
        "for its gateway addresses")


def test_trace_command_names_each_drop_reason(traced):
    assert verdict(traced, "--from", "web-a", "--to", "db-b", "--ttl", "1") == (
        "dropped by ttl: its TTL is 1 or less: a router does not forward it (RFC 1812 "
        "section 5.3.1)")
    assert verdict(traced, "--from", "other-a", "--to", "app-b") == (
        "dropped by route: other routing domain: app-b is in routing domain contoso, "
        "unreachable from fabrikam")
    assert verdict(traced, "--from", "web-a", "--to", "10.9.9.9") == (
        "dropped by route: no subnet of web-a's routing domain contoso holds 10.9.9.9")
    assert verdict(traced, "--from", "web-a", "--to", "10.1.2.99") == (
        "dropped by route: no VM of subnet db (10.1.2.0/24) has 10.1.2.99")
    # Bridged traffic is as before: the L2-only VM is not routed.
    assert verdict(traced, "--from", "flat-a", "--to", "db-b").startswith(
        "dropped: different virtual subnet (db-b is in VSID 5002, flat-a in 7001)")


def test_status_shows_the_routing_domains_of_the_host(traced):
    trace, _, _ = traced
    result = trace.host.ovsnvgre("status", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    jsonschema.validate(data, STATUS)
    contoso, fabrikam = data["routing_domains"]
    assert [(s["name"], s["gateway"], s["vms"]) for s in contoso["subnets"]] == [
        ("web", "10.1.1.1", ["web-a"]), ("db", "10.1.2.1", ["db-a"]), ("app", "10.1.3.1", [])]
    assert fabrikam["name"] == "fabrikam" and fabrikam["router_mac"] == ROUTER
    text = trace.host.ovsnvgre("status").stdout
    assert "routing domains (2):" in text
    assert any(line.split()[:5] == ["contoso", "db", "5002", "10.1.2.0/24", "10.1.2.1"]
               for line in text.splitlines())
    assert "route 7" in text and "gateway 14" in text  # flows per table


def test_trace_command_says_a_routed_packets_flowid_is_hashed(tmp_path):
    """With flow_id: hash the routed verdict gives the destination VSID's key and this
    packet's FlowID apart, as the bridged verdict does."""
    with running_lab(tmp_path) as lab:
        lab.fabric.write_text(ROUTED.replace("tunnel_ports: per-vsid",
                                             "tunnel_ports: per-peer, flow_id: hash"))
        host = lab.host("host1", "198.51.100.11/24", "198.51.100.1",
                        vm_ports=("vnet0", "vnet1", "vnet2", "vnet3"))
        assert host.ovsnvgre("up").returncode == 0
        text = verdict((Tracer(host), "per-peer", "rfc7637"),
                       "--from", "web-a", "--to", "10.1.2.20", "--proto", "tcp:5555")
    assert re.fullmatch(r"routed by contoso's distributed router to db-b \(10\.1\.2\.20\) via "
                        r"tunnel to host2 with key 0x138a00 \+ FlowID hash \(0x[0-9a-f]{1,2} "
                        r"for this packet\)", text), text
