"""The distributed router's flows as text (issue 18), and the tunnel ports routing needs.

The fabric is tests/fabrics.py's ROUTED: contoso (web 5001, db 5002, app 5003) and
fabrikam (other 6001, data 6002) with overlapping prefixes, and an L2-only flat 7001
whose VM holds 10.1.1.1, a gateway address in both domains.
"""

from __future__ import annotations

from collections import Counter

import pytest
from fabrics import ROUTED, TWO_HOSTS

from ovsnvgre import fabric
from ovsnvgre.desired import PEER_KEY, VSID_KEY, Role, desired_host, peers_sharing, shared_vsids
from ovsnvgre.pipeline import describe, desired_flows, table_of
from ovsnvgre.pipeline.flow import FLOW_ID_HASH

ROUTER_MAC = "02:00:5e:00:01:01"
GATEWAY, TTL, ROUTE = (table_of(name) for name in ("gateway", "ttl", "route"))
CONTOSO, FABRIKAM = "reg2=0x1", "reg2=0x2"


def routed(host="host1", mode="per-vsid", layout="rfc7637", text=ROUTED, live=None):
    fab = fabric.loads(text.replace("tunnel_ports: per-vsid", f"tunnel_ports: {mode}")
                       .replace("key_layout: rfc7637", f"key_layout: {layout}"), "f.yaml")
    state = desired_host(fab, host)
    return state, desired_flows(state, set(state.ports) if live is None else live)


def texts(flows, table):
    return sorted(describe(f) for f in flows if f.table == table)


@pytest.mark.parametrize("mode", ["per-vsid", "per-peer", "flow"])
@pytest.mark.parametrize("layout", ["rfc7637", "plain"])
def test_one_flow_per_match_and_a_default_in_every_router_table(mode, layout):
    _, flows = routed(mode=mode, layout=layout)
    assert max(Counter(f.key for f in flows).values()) == 1
    assert {f.table for f in flows if f.priority == 0} >= {GATEWAY, TTL, ROUTE}


def test_classify_hands_a_routed_vms_frames_for_the_router_to_gateway():
    _, flows = routed()
    classify = texts(flows, table_of("classify"))
    assert ("classify priority=110 ip,dl_dst=02:00:5e:00:01:01,dl_src=02:00:00:00:51:01,"
            "in_port=vnet0,nw_src=10.1.1.10 actions=set_field:0x1389->reg0,"
            f"set_field:0x1->reg2,goto_table:{GATEWAY}") in classify
    # fabrikam's VM gets fabrikam's number, whatever its overlapping address.
    assert ("classify priority=110 ip,dl_dst=02:00:5e:00:01:01,dl_src=02:00:00:00:61:01,"
            "in_port=vnet2,nw_src=10.1.1.10 actions=set_field:0x1771->reg0,"
            f"set_field:0x2->reg2,goto_table:{GATEWAY}") in classify
    assert ("classify priority=110 arp,arp_op=1,arp_sha=02:00:00:00:51:01,arp_spa=10.1.1.10,"
            "arp_tpa=10.1.1.1,dl_src=02:00:00:00:51:01,in_port=vnet0 "
            f"actions=set_field:0x1389->reg0,goto_table:{GATEWAY}") in classify
    # The L2-only VM is never handed to a router, and nothing else sets reg2.
    assert not any("vnet3" in t and (f"goto_table:{GATEWAY}" in t or "reg2" in t)
                   for t in classify)
    assert sum("->reg2" in t for t in classify) == 3


def test_gateway_answers_arp_for_the_own_subnets_gateway_only():
    _, flows = routed()
    gateway = texts(flows, GATEWAY)
    web = next(t for t in gateway if "arp" in t and "reg0=0x1389" in t)
    assert web.startswith("gateway priority=100 arp,arp_op=1,arp_tpa=10.1.1.1,reg0=0x1389 ")
    assert f"set_field:{ROUTER_MAC}->eth_src" in web and f"set_field:{ROUTER_MAC}->arp_sha" in web
    assert "set_field:10.1.1.1->arp_spa" in web and web.endswith(",IN_PORT")
    # One per local routed subnet (web, db, other); not app (no VM here), not flat.
    assert sorted(t.split(" ")[2] for t in gateway if " arp," in t) == [
        "arp,arp_op=1,arp_tpa=10.1.1.1,reg0=0x1389", "arp,arp_op=1,arp_tpa=10.1.1.1,reg0=0x1771",
        "arp,arp_op=1,arp_tpa=10.1.2.1,reg0=0x138a"]


def test_gateway_answers_ping_to_every_gateway_of_the_domain():
    _, flows = routed()
    gateway = texts(flows, GATEWAY)
    echo = [t for t in gateway if "icmp_type=8" in t]
    # contoso's three gateways (app's too: no VM of app here), fabrikam's two.
    assert sorted(t.split(" ")[2] for t in echo) == [
        f"icmp,icmp_code=0,icmp_type=8,nw_dst=10.1.1.1,{CONTOSO}",
        f"icmp,icmp_code=0,icmp_type=8,nw_dst=10.1.1.1,{FABRIKAM}",
        f"icmp,icmp_code=0,icmp_type=8,nw_dst=10.1.2.1,{CONTOSO}",
        f"icmp,icmp_code=0,icmp_type=8,nw_dst=10.1.2.1,{FABRIKAM}",
        f"icmp,icmp_code=0,icmp_type=8,nw_dst=10.1.3.1,{CONTOSO}"]
    app = next(t for t in echo if "10.1.3.1" in t)
    assert app.endswith("actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],"
                        f"set_field:{ROUTER_MAC}->eth_src,move:NXM_OF_IP_SRC[]->NXM_OF_IP_DST[],"
                        "set_field:10.1.3.1->ip_src,set_field:64->nw_ttl,set_field:0->icmp_type,"
                        "IN_PORT")
    assert f"gateway priority=50 ip,nw_dst=10.1.3.1,{CONTOSO} actions=drop" in gateway
    assert f"gateway priority=0 actions=goto_table:{TTL}" in gateway


def test_ttl_drops_what_the_router_may_not_forward():
    _, flows = routed()
    assert texts(flows, TTL) == [
        "ttl priority=0 actions=goto_table:50".replace("50", str(ROUTE)),
        "ttl priority=100 ip,nw_ttl=0 actions=drop",
        "ttl priority=100 ip,nw_ttl=1 actions=drop"]


def test_route_rewrites_and_sends_with_the_destination_vsid():
    _, flows = routed()
    route = texts(flows, ROUTE)
    rewrite = f"dec_ttl,set_field:{ROUTER_MAC}->eth_src"
    assert route == sorted([
        "route priority=0 actions=drop",
        # contoso: local web-a and db-a, remote db-b and app-b (app: no VM of it here).
        f"route priority=100 ip,nw_dst=10.1.1.10,{CONTOSO} actions={rewrite},"
        "set_field:02:00:00:00:51:01->eth_dst,set_field:0x1389->reg0,output:vnet0",
        f"route priority=100 ip,nw_dst=10.1.2.10,{CONTOSO} actions={rewrite},"
        "set_field:02:00:00:00:52:01->eth_dst,set_field:0x138a->reg0,output:vnet1",
        f"route priority=100 ip,nw_dst=10.1.2.20,{CONTOSO} actions={rewrite},"
        "set_field:02:00:00:00:52:02->eth_dst,set_field:0x138a->reg0,output:gcb00710b00138a",
        f"route priority=100 ip,nw_dst=10.1.3.20,{CONTOSO} actions={rewrite},"
        "set_field:02:00:00:00:53:02->eth_dst,set_field:0x138b->reg0,output:gcb00710b00138b",
        # fabrikam: the same addresses are other VMs.
        f"route priority=100 ip,nw_dst=10.1.1.10,{FABRIKAM} actions={rewrite},"
        "set_field:02:00:00:00:61:01->eth_dst,set_field:0x1771->reg0,output:vnet2",
        f"route priority=100 ip,nw_dst=10.1.2.20,{FABRIKAM} actions={rewrite},"
        "set_field:02:00:00:00:62:02->eth_dst,set_field:0x1772->reg0,output:gcb00710b001772",
    ])


@pytest.mark.parametrize("layout,key", [("rfc7637", 5003 << 8), ("plain", 5003)])
def test_per_peer_routes_with_the_destination_key(layout, key):
    _, flows = routed(mode="per-peer", layout=layout)
    app = next(t for t in texts(flows, ROUTE) if "10.1.3.20" in t)
    assert app.endswith(f"set_field:0x138b->reg0,set_field:{key:#x}->tun_id,output:gre-cb00710b")


def test_a_destination_not_on_the_switch_yet_gets_no_route():
    state, flows = routed(live={"vnet0", "vnet1", "vnet2", "vnet3"})
    assert not any("10.1.2.20" in t or "10.1.3.20" in t for t in texts(flows, ROUTE))
    assert any("nw_dst=10.1.2.10" in t for t in texts(flows, ROUTE))


def test_a_host_without_routed_vms_has_empty_router_tables():
    _, flows = routed(text=TWO_HOSTS)
    assert texts(flows, ROUTE) == ["route priority=0 actions=drop"]
    assert texts(flows, GATEWAY) == [f"gateway priority=0 actions=goto_table:{TTL}"]


def test_per_vsid_ports_cover_every_key_routed_traffic_crosses_with():
    state, _ = routed()
    tunnels = {(p.external_ids[PEER_KEY], int(p.external_ids[VSID_KEY]))
               for p in state.ports.values() if p.role == Role.TUNNEL}
    # db is shared; host1 routes to app-b (app) and data-b (data); host2 routes back to
    # web-a (web) and other-a (other).  flat 7001 is on host1 only.
    assert tunnels == {("host2", 5001), ("host2", 5002), ("host2", 5003), ("host2", 6001),
                       ("host2", 6002)}
    other, _ = routed("host2")
    back = {(p.external_ids[PEER_KEY], int(p.external_ids[VSID_KEY]))
            for p in other.ports.values() if p.role == Role.TUNNEL}
    assert back == {("host1", vsid) for _, vsid in tunnels}


def test_the_shared_vsids_are_symmetric_and_without_routing_as_before():
    fab = fabric.loads(ROUTED, "f.yaml")
    assert shared_vsids(fab, "host1", "host2") == shared_vsids(fab, "host2", "host1") == {
        5001, 5002, 5003, 6001, 6002}
    assert peers_sharing(fab, fab.hosts["host1"]) == {"host2": {5001, 5002, 5003, 6001, 6002}}
    plain = fabric.loads(TWO_HOSTS, "f.yaml")
    assert shared_vsids(plain, "host1", "host2") == {5001, 6001}


def test_flooding_goes_only_to_peers_with_a_vm_in_the_vsid():
    _, flows = routed()
    forward = texts(flows, table_of("forward"))
    # host2 has no VM of web: web's broadcast stays on host1 though the port exists.
    web_flood = next(t for t in forward if "priority=50 reg0=0x1389,reg1=0 " in t)
    assert web_flood.endswith("actions=output:vnet0")
    db_flood = next(t for t in forward if "priority=50 reg0=0x138a,reg1=0 " in t)
    assert db_flood.endswith("actions=output:vnet1,output:gcb00710b00138a")


def test_routed_frames_get_the_flowid_hash_where_the_pipeline_sets_the_key():
    text = ROUTED.replace("tunnel_ports: per-vsid}", "tunnel_ports: per-vsid, flow_id: hash}")
    _, flows = routed(mode="per-peer", text=text)
    app = next(t for t in texts(flows, ROUTE) if "10.1.3.20" in t)
    assert app.endswith(f"set_field:0x138b00->tun_id,{FLOW_ID_HASH},output:gre-cb00710b")
