"""The generated pipeline as text, for a small fabric, in both modes and layouts."""

from collections import Counter

import pytest
from fabrics import TWO_HOSTS

from ovsnvgre import fabric
from ovsnvgre.desired import desired_host
from ovsnvgre.openflow import parse_flow
from ovsnvgre.pipeline import COOKIE, STAGES, Flow, describe, desired_flows, table_of
from ovsnvgre.plan import by_dump_line, diff_dump, diff_flows

CLASSIFY, ARP_RESPONDER, FORWARD = (table_of(name) for name in
                                    ("classify", "arp_responder", "forward"))
TO_FORWARD = f"goto_table:{FORWARD}"
TO_ARP_RESPONDER = f"goto_table:{ARP_RESPONDER}"


def pipeline(mode="per-vsid", layout="rfc7637", live=None):
    text = TWO_HOSTS.replace("tunnel_ports: per-vsid", f"tunnel_ports: {mode}") \
        .replace("key_layout: rfc7637", f"key_layout: {layout}")
    state = desired_host(fabric.loads(text, "f.yaml"), "host1")
    return desired_flows(state, set(state.ports) if live is None else live)


def texts(flows, table=None):
    return sorted(describe(f) for f in flows if table is None or f.table == table)


@pytest.mark.parametrize("mode,layout", [("per-vsid", "rfc7637"), ("per-peer", "rfc7637"),
                                         ("per-vsid", "plain"), ("per-peer", "plain"),
                                         ("flow", "rfc7637"), ("flow", "plain")])
def test_one_flow_per_match(mode, layout):
    flows = pipeline(mode, layout)
    counts = Counter(f.key for f in flows)
    assert max(counts.values()) == 1
    # Every table ends in a default of priority 0.
    assert {f.table for f in flows if f.priority == 0} == {table_of(stage.name) for stage in STAGES}


def test_per_vsid_classifies_by_port():
    classify = texts(pipeline(), CLASSIFY)
    assert ("classify priority=100 in_port=gcb00710b001389 actions=set_field:0x1389->reg0,"
            f"set_field:0x1->reg1,{TO_FORWARD}") in classify
    assert ("classify priority=100 ip,dl_src=02:00:00:00:50:01,in_port=vnet0,nw_src=10.0.0.1 "
            f"actions=set_field:0x1389->reg0,{TO_FORWARD}") in classify
    assert ("classify priority=100 arp,arp_sha=02:00:00:00:50:01,arp_spa=10.0.0.1,"
            "dl_src=02:00:00:00:50:01,in_port=vnet0 actions=set_field:0x1389->reg0,"
            f"{TO_ARP_RESPONDER}") in classify
    assert "classify priority=0 actions=drop" in classify


def test_per_peer_rfc7637_keys_live_in_the_top_24_bits():
    flows = pipeline("per-peer")
    assert ("classify priority=100 in_port=gre-cb00710b,tun_id=0x138900/0xffffff00 "
            f"actions=set_field:0x1389->reg0,set_field:0x1->reg1,{TO_FORWARD}") \
        in texts(flows, CLASSIFY)
    assert ("forward priority=100 dl_dst=02:00:00:00:50:02,reg0=0x1389,reg1=0 "
            "actions=set_field:0x138900->tun_id,output:gre-cb00710b") \
        in texts(flows, FORWARD)


def test_per_vsid_receive_only_port_classifies_by_the_top_24_bits():
    classify = texts(pipeline(), CLASSIFY)
    assert ("classify priority=100 in_port=gre-cb00710b,tun_id=0x138900/0xffffff00 "
            f"actions=set_field:0x1389->reg0,set_field:0x1->reg1,{TO_FORWARD}") in classify
    assert ("classify priority=100 in_port=gre-cb00710b,tun_id=0x177100/0xffffff00 "
            f"actions=set_field:0x1771->reg0,set_field:0x1->reg1,{TO_FORWARD}") in classify
    # It only receives: no flow sends to it.
    assert not any("output:gre-cb00710b" in t for t in texts(pipeline()))


def test_per_peer_plain_key_is_the_vsid():
    flows = pipeline("per-peer", "plain")
    assert any("tun_id=0x1389 " in t for t in texts(flows, CLASSIFY))
    assert any("set_field:0x1389->tun_id" in t for t in texts(flows, FORWARD))


def test_flow_mode_sends_to_the_peers_pa_with_the_key():
    flows = pipeline("flow")
    assert ("forward priority=100 dl_dst=02:00:00:00:50:02,reg0=0x1389,reg1=0 "
            "actions=set_field:203.0.113.11->tun_dst,set_field:0x138900->tun_id,"
            "output:gre-flow") in texts(flows, FORWARD)
    assert ("forward priority=50 reg0=0x1771,reg1=0 actions=output:vnet1,"
            "set_field:203.0.113.11->tun_dst,set_field:0x177100->tun_id,output:gre-flow") \
        in texts(flows, FORWARD)


@pytest.mark.parametrize("layout,key", [("rfc7637", "tun_id=0x138900/0xffffff00"),
                                        ("plain", "tun_id=0x1389")])
def test_flow_mode_receives_by_key_and_the_peers_pa(layout, key):
    classify = [t for t in texts(pipeline("flow", layout), CLASSIFY) if "gre-flow" in t]
    assert (f"classify priority=100 in_port=gre-flow,{key},tun_src=203.0.113.11 "
            f"actions=set_field:0x1389->reg0,set_field:0x1->reg1,{TO_FORWARD}") in classify
    # One flow per (peer, shared VSID): nothing takes a frame from any other PA.
    assert len(classify) == 2 and all("tun_src=203.0.113.11" in t for t in classify)


THREE_HOSTS = TWO_HOSTS.replace("tunnel_ports: per-vsid", "tunnel_ports: flow").replace(
    "virtual_subnets:", "  host3: {pa: 192.0.2.13/24}\nvirtual_subnets:").replace(
    "  blue: {vsid: 6001}\n", "  blue: {vsid: 6001}\n  green: {vsid: 7001}\n") + (
    '  blue-c: {host: host3, subnet: blue, port: vnet1, mac: "02:00:00:00:60:03", '
    "ca: 10.0.0.3/24}\n"
    '  green-c: {host: host3, subnet: green, port: vnet2, mac: "02:00:00:00:70:03", '
    "ca: 10.0.0.3/24}\n")


def test_flow_mode_takes_a_vsid_only_from_the_peers_that_share_it():
    state = desired_host(fabric.loads(THREE_HOSTS, "f.yaml"), "host1")
    flows = desired_flows(state, set(state.ports))
    assert [p.name for p in state.ports.values() if p.role == "tunnel-flow"] == ["gre-flow"]
    sources = sorted(token for f in flows if f.table == CLASSIFY for token in f.match
                      if token.startswith(("tun_src", "tun_id")))
    # host2 shares red and blue, host3 blue only (its green is no VSID of host1's).
    assert sources == sorted(["tun_src=203.0.113.11", "tun_id=0x138900/0xffffff00",
                              "tun_src=203.0.113.11", "tun_id=0x177100/0xffffff00",
                              "tun_src=192.0.2.13", "tun_id=0x177100/0xffffff00"])
    blue_flood = next(describe(f) for f in flows if f.table == FORWARD and f.priority == 50
                      and "reg0=0x1771,reg1=0 " in describe(f))
    # Head-end replication: each peer's PA, then the port; the key set once serves both.
    assert blue_flood.endswith("actions=output:vnet1,set_field:203.0.113.11->tun_dst,"
                               "set_field:0x177100->tun_id,output:gre-flow,"
                               "set_field:192.0.2.13->tun_dst,output:gre-flow")


def test_flow_mode_hashes_the_flow_id_after_setting_the_peer_and_key():
    text = THREE_HOSTS.replace("tunnel_ports: flow", "tunnel_ports: flow, flow_id: hash")
    state = desired_host(fabric.loads(text, "f.yaml"), "host1")
    forward = texts(desired_flows(state, set(state.ports)), FORWARD)
    hashed = "multipath(symmetric_l3l4+udp,0,modulo_n,256,0,NXM_NX_TUN_ID[0..7])"
    assert ("forward priority=100 dl_dst=02:00:00:00:50:02,reg0=0x1389,reg1=0 actions="
            f"set_field:203.0.113.11->tun_dst,set_field:0x138900->tun_id,{hashed},"
            "output:gre-flow") in forward
    # Head-end replication: the key and its hash once, then each peer's PA and output.
    assert ("forward priority=50 reg0=0x1771,reg1=0 actions=output:vnet1,"
            f"set_field:203.0.113.11->tun_dst,set_field:0x177100->tun_id,{hashed},"
            "output:gre-flow,set_field:192.0.2.13->tun_dst,output:gre-flow") in forward


def test_flow_mode_without_a_live_flow_port_sends_nowhere():
    flows = pipeline("flow", live={"vnet0", "vnet1"})
    assert not any("gre-flow" in describe(f) or "tun_" in describe(f) for f in flows)


def test_flooding_stays_in_the_vsid_and_respects_split_horizon():
    forward = texts(pipeline(), FORWARD)
    assert ("forward priority=50 reg0=0x1389,reg1=0 actions=output:vnet0,"
            "output:gcb00710b001389") in forward
    # From a tunnel: broadcast and multicast to the local ports only; other unicast
    # than a local VM's falls to the table's drop (no flow per remote VM).
    assert ("forward priority=50 dl_dst=01:00:00:00:00:00/01:00:00:00:00:00,reg0=0x1389,"
            "reg1=0x1 actions=output:vnet0") in forward
    assert not any("reg1=0x1" in text and "priority=100" in text for text in forward)
    assert not any("reg1=0x1" in text and "gcb00710b" in text for text in forward)


def test_one_forward_flow_per_remote_vm():
    flows = pipeline("per-peer")
    to_red_b = [f for f in flows if f.table == FORWARD and "dl_dst=02:00:00:00:50:02" in f.match]
    assert len(to_red_b) == 1 and "reg1=0" in to_red_b[0].match


def test_arp_responder_answers_with_the_fabrics_mac():
    responder = texts(pipeline(), ARP_RESPONDER)
    red_b = next(t for t in responder if "reg0=0x1389" in t and "arp_tpa=10.0.0.2" in t)
    assert "set_field:02:00:00:00:50:02->eth_src" in red_b
    assert "set_field:10.0.0.2->arp_spa" in red_b and red_b.endswith(",IN_PORT")
    blue_b = next(t for t in responder if "reg0=0x1771" in t and "arp_tpa=10.0.0.2" in t)
    assert "set_field:02:00:00:00:60:02->arp_sha" in blue_b


def test_ports_that_are_not_live_get_no_flows():
    flows = pipeline(live={"vnet0", "gcb00710b001389"})
    assert not any("vnet1" in describe(f) or "gcb00710b001771" in describe(f) for f in flows)
    assert any("vnet0" in describe(f) for f in flows)


def test_install_lines_carry_the_cookie():
    flow = next(f for f in pipeline() if f.table == CLASSIFY and f.priority == 0)
    assert flow.add_line() == f"add cookie={COOKIE:#x}, priority=0 actions=drop"
    assert flow.delete_line() == \
        f"delete_strict table={CLASSIFY},priority=0,cookie={COOKIE:#x}/0xfffffffffffffffe"


def test_a_dumped_flow_parses_back_to_the_generated_one():
    line = (f' cookie={COOKIE:#x}, table={FORWARD}, priority=100,reg0=0x1389,reg1=0,'
            'dl_dst=02:00:00:00:50:02 actions=set_field:0x138900->tun_id,output:"gre-cb00710b"')
    parsed = parse_flow(line)
    assert parsed in pipeline("per-peer")


def test_a_dumped_flow_of_another_shape_parses_field_by_field():
    # A default priority is not printed; a timeout set by hand sits before it.
    assert parse_flow(f" cookie={COOKIE:#x}, reg0=0x1 actions=drop") == \
        Flow(0, 32768, frozenset({"reg0=0x1"}), "drop")
    line = f" cookie={COOKIE:#x}, table=20, idle_timeout=5, priority=100,reg0=0x1 actions=drop"
    assert parse_flow(line) == Flow(20, 100, frozenset({"idle_timeout=5", "reg0=0x1"}), "drop")
    assert parse_flow("OFPST_FLOW reply (OF1.3) (xid=0x2):") is None


def test_dump_line_is_the_flow_as_ovs_ofctl_prints_it():
    flow = next(f for f in pipeline("per-peer") if f.table == CLASSIFY and
                "in_port=gre-cb00710b" in f.match and "tun_id=0x138900/0xffffff00" in f.match)
    # Fields in OVS's order (tun_id before in_port), table 0 left out.
    assert flow.dump_line == (f" cookie={COOKIE:#x}, priority=100,tun_id=0x138900/0xffffff00,"
                              "in_port=gre-cb00710b actions=set_field:0x1389->reg0,"
                              f"set_field:0x1->reg1,{TO_FORWARD}")
    arp = next(f for f in pipeline() if f.table == CLASSIFY and "arp" in f.match
               and "in_port=vnet0" in f.match)
    assert arp.dump_line == (f" cookie={COOKIE:#x}, priority=100,arp,in_port=vnet0,"
                             "dl_src=02:00:00:00:50:01,arp_spa=10.0.0.1,"
                             "arp_sha=02:00:00:00:50:01 actions=set_field:0x1389->reg0,"
                             f"{TO_ARP_RESPONDER}")
    default = Flow(FORWARD, 32768, frozenset(), "drop")
    assert default.dump_line == f" cookie={COOKIE:#x}, table={FORWARD}, actions=drop"
    for flow in pipeline("per-peer"):
        assert parse_flow(flow.dump_line) == flow


def test_diff_dump_compares_text_and_parses_only_what_differs():
    flows = pipeline()
    wanted = by_dump_line(flows)
    lines = frozenset(wanted)
    assert not diff_dump("br-int", wanted, lines)
    # A desired flow whose text reads otherwise than the dump is still the same flow.
    one = next(iter(flows))
    misspelt = {**{k: v for k, v in wanted.items() if v != one}, "not as OVS prints": one}
    assert not diff_dump("br-int", misspelt, lines)
    # Another action on the switch, or a flow missing or extra: found.
    changed = type(one)(one.table, one.priority, one.match, "drop" if one.actions != "drop"
                        else TO_FORWARD)
    diff = diff_dump("br-int", wanted, (lines - {one.dump_line}) | {changed.dump_line})
    assert diff.add == (one,) and diff.delete == ()
    diff = diff_dump("br-int", wanted, lines - {one.dump_line})
    assert diff.add == (one,) and diff.delete == ()
    stale = type(one)(99, 1, frozenset({"reg0=0x1"}), "drop")
    diff = diff_dump("br-int", wanted, lines | {stale.dump_line})
    assert diff.add == () and diff.delete == (stale,)


def test_diff_sends_only_the_difference():
    flows = pipeline()
    assert not diff_flows("br-int", flows, flows)
    one = next(iter(flows))
    changed = type(one)(one.table, one.priority, one.match, "drop" if one.actions != "drop"
                        else TO_FORWARD)
    diff = diff_flows("br-int", flows, (flows - {one}) | {changed})
    assert diff.add == (one,) and diff.delete == ()
    stale = type(one)(99, 1, frozenset({"reg0=0x1"}), "drop")
    diff = diff_flows("br-int", flows, flows | {stale})
    assert diff.add == () and diff.delete == (stale,)
