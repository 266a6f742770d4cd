"""External gateways as data (issue 19), pure: the namespace a domain gets, its nftables
ruleset, the difference with what a namespace holds, the stage's flows and the tunnels
to the gateway host.  The fabric is examples/gateway.yaml: contoso and fabrikam with the
same prefixes, VMs on host1 and host2, host3 the gateway host of both."""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from ovsnvgre import external, fabric
from ovsnvgre.desired import Role, desired_host, shared_vsids
from ovsnvgre.external import ActualSide, diff, sides
from ovsnvgre.pipeline import describe, desired_flows, table_of

GATEWAY = (Path(__file__).parent.parent / "examples" / "gateway.yaml").read_text()
ROUTER_MAC = "02:00:5e:00:01:01"
CONTOSO, FABRIKAM = "reg2=0x1", "reg2=0x2"
EXTERNAL = table_of("external")


def load(text: str = GATEWAY, mode: str = "per-vsid") -> fabric.Fabric:
    return fabric.loads(text.replace("tunnel_ports: per-vsid", f"tunnel_ports: {mode}"),
                        "f.yaml")


def flows_of(host: str, mode: str = "per-vsid", live: set[str] | None = None):
    state = desired_host(load(mode=mode), host)
    return state, desired_flows(state, set(state.ports) if live is None else live)


def texts(flows, table: str) -> list[str]:
    return sorted(describe(f) for f in flows if f.table == table_of(table))


def test_each_domain_gets_its_own_namespace_port_and_macs():
    fab = load()
    found = sides(fab, "host3")
    assert list(found) == ["contoso", "fabrikam"] and sides(fab, "host1") == {}
    contoso, fabrikam = found["contoso"], found["fabrikam"]
    assert contoso.netns == "ovsnvgre-gateway-contoso"
    assert contoso.bridge_port.startswith("gw") and len(contoso.bridge_port) == 10
    assert len({contoso.bridge_port, fabrikam.bridge_port}) == 2
    macs = {contoso.gateway_mac, contoso.outside_mac, fabrikam.gateway_mac, fabrikam.outside_mac}
    assert len(macs) == 4
    assert all(int(mac[:2], 16) & 0b11 == 0b10 for mac in macs)  # locally administered
    assert contoso.addresses == (ipaddress.IPv4Interface("203.0.113.10/24"),
                                 ipaddress.IPv4Interface("203.0.113.21/32"))
    assert fabrikam.snat == ipaddress.IPv4Address("203.0.113.11")
    assert [str(p) for p, _ in contoso.inside_routes] == ["10.1.1.0/24", "10.1.2.0/24"]
    assert contoso.mtu == 1458  # 1500 - the 42 bytes NVGRE adds
    assert contoso.marker == "ovsnvgre-fabric=gateway host=host3 domain=contoso"
    # A fixed name, a fixed port and fixed MACs: a run tomorrow finds the same.
    assert sides(load(), "host3") == found


def test_the_ruleset_nats_each_domain_to_its_own_address_and_filters():
    fab = load()
    contoso = sides(fab, "host3", frozenset({ipaddress.IPv4Address("203.0.113.5")}))["contoso"]
    rules = contoso.ruleset
    assert 'iifname "ext0" ip daddr 203.0.113.21 dnat to 10.1.1.20' in rules
    assert 'oifname "ext0" ip saddr 10.1.1.20 snat to 203.0.113.21' in rules
    assert rules.index("snat to 203.0.113.21") < rules.index('oifname "ext0" snat to 203.0.113.10')
    assert "203.0.113.11" not in rules.split("set blocked")[0]  # fabrikam's is not NATed here
    blocked = rules.split("elements = {")[1].split("}")[0]
    assert [a.strip() for a in blocked.split(",")] == [
        "192.168.1.1", "192.168.1.11", "192.168.2.1", "192.168.2.11", "192.168.3.1",
        "192.168.3.11", "203.0.113.5", "203.0.113.11"]
    assert "policy drop" in rules.split("chain forward")[1].split("}")[0]
    assert 'iifname "ext0" oifname "int0" ct status dnat accept' in rules
    assert rules.startswith("table ip ovsnvgre {}\ndelete table ip ovsnvgre\n")
    fabrikam = sides(fab, "host3")["fabrikam"].ruleset
    assert 'oifname "ext0" snat to 203.0.113.11' in fabrikam and "dnat to" not in fabrikam


def test_the_digest_follows_the_rules():
    fab = load()
    contoso = sides(fab, "host3")["contoso"]
    digest = external.ruleset_digest(contoso.ruleset)
    assert digest and len(digest) == 16
    moved = load(GATEWAY.replace("web-a: 203.0.113.21", "web-a: 203.0.113.22"))
    assert external.ruleset_digest(sides(moved, "host3")["contoso"].ruleset) != digest
    listed = f'table ip ovsnvgre {{\n\tcomment "{contoso.marker} rules={digest}"\n}}'
    assert external.ruleset_digest(listed) == digest
    assert external.ruleset_digest("table ip ovsnvgre {\n}") is None


def _matching(side) -> ActualSide:
    return ActualSide(
        side.netns, True, True, (side.gateway_mac, side.mtu, True, side.marker),
        (side.outside_mac, 1500, True, f"{side.marker} nic={side.nic}"),
        frozenset(side.addresses), external.wanted_routes(side),
        external.wanted_neighbours(side), dict(external.SYSCTLS),
        external.ruleset_digest(side.ruleset), 0)


def test_diff_is_empty_when_the_namespace_holds_the_side_and_names_each_difference():
    side = sides(load(), "host3")["contoso"]
    held = _matching(side)
    assert diff(side, held) == []
    assert [c.action for c in diff(side, ActualSide(side.netns, False))] == ["create"]
    cases = {
        "links": replace(held, outside=None),
        "addresses": replace(held, addresses=frozenset(side.addresses[:1])),
        "routes": replace(held, routes=frozenset()),
        "neighbours": replace(held, neighbours=frozenset()),
        "sysctls": replace(held, sysctls={}),
        "ruleset": replace(held, ruleset_digest="0" * 16),
    }
    for action, actual in cases.items():
        assert [c.action for c in diff(side, actual)] == [action]
    assert [c.action for c in diff(side, replace(held, bridge_port=False))] == ["links"]
    moved_nic = replace(held, outside=(side.outside_mac, 1500, True, f"{side.marker} nic=eth9"))
    assert [c.action for c in diff(side, moved_nic)] == ["links"]


def test_ownership_by_mark_fabric_and_host():
    fab = load()
    assert external.owned(fab, "host3", "ovsnvgre-gateway-x",
                          "ovsnvgre-fabric=gateway host=host3 domain=x")
    assert not external.owned(fab, "host3", "ovsnvgre-gateway-x",
                              "ovsnvgre-fabric=gateway host=host2 domain=x")
    assert not external.owned(fab, "host3", "ovsnvgre-gateway-x",
                              "ovsnvgre-fabric=gateway-x host=host3 domain=y")
    # No mark (int0 gone): only a domain's own name on its own gateway host.
    assert external.owned(fab, "host3", "ovsnvgre-gateway-contoso", None)
    assert not external.owned(fab, "host3", "ovsnvgre-gateway-stranger", None)
    assert not external.owned(fab, "host1", "ovsnvgre-gateway-contoso", None)


def test_the_gateway_host_shares_each_domain_vsid_with_the_hosts_of_its_vms():
    fab = load()
    assert shared_vsids(fab, "host1", "host3") == shared_vsids(fab, "host3", "host1") == \
        {5001, 6001}
    assert shared_vsids(fab, "host2", "host3") == {5002, 6002}
    ports = desired_host(fab, "host3").ports
    externals = [p for p in ports.values() if p.role == Role.EXTERNAL]
    assert sorted(p.external_ids["ovsnvgre-routing-domain"] for p in externals) == \
        ["contoso", "fabrikam"]
    assert not any(p.role == Role.EXTERNAL for p in desired_host(fab, "host1").ports.values())


@pytest.mark.parametrize("mode", ["per-vsid", "per-peer"])
def test_one_flow_per_match(mode):
    for host in ("host1", "host2", "host3"):
        _, flows = flows_of(host, mode)
        assert max(Counter(f.key for f in flows).values()) == 1


def test_a_remote_host_sends_outside_destinations_to_the_gateway_host_with_the_source_vsid():
    fab = load()
    state, flows = flows_of("host1")
    route = texts(flows, "route")
    assert "route priority=2 ip,nw_dst=10.1.1.0/24,reg2=0x1 actions=drop" in route
    assert "route priority=2 ip,nw_dst=10.1.2.0/24,reg2=0x2 actions=drop" in route
    assert f"route priority=1 ip,reg2=0x1 actions=goto_table:{EXTERNAL}" in route
    contoso = external.gateway_mac(fab, "contoso")
    to_host3 = next(p.name for p in state.ports.values() if p.role == Role.TUNNEL
                    and p.external_ids["ovsnvgre-peer"] == "host3"
                    and p.external_ids["ovsnvgre-vsid"] == "5001")
    assert (f"external priority=100 ip,reg0=0x1389,reg2=0x1 actions=dec_ttl,"
            f"set_field:{ROUTER_MAC}->eth_src,set_field:{contoso}->eth_dst,"
            f"output:{to_host3}") in texts(flows, "external")
    # host1 has no VM of db: no way out is made for it there.
    assert not any("reg0=0x138a" in t for t in texts(flows, "external"))


def test_per_peer_sets_the_source_vsid_key():
    _, flows = flows_of("host1", "per-peer")
    out = [t for t in texts(flows, "external") if "reg0=0x1771" in t]
    assert len(out) == 1 and "set_field:0x177100->tun_id,output:gre-c0a8030b" in out[0]


def test_the_gateway_host_takes_frames_for_the_namespace_and_its_replies():
    fab = load()
    state, flows = flows_of("host3")
    port = external.bridge_port(fab, "contoso")
    mac = external.gateway_mac(fab, "contoso")
    forward = texts(flows, "forward")
    for vsid in ("0x1389", "0x138a"):
        assert (f"forward priority=100 dl_dst={mac},reg0={vsid},reg1=0x1 "
                f"actions=output:{port}") in forward
    assert (f"classify priority=100 ip,dl_dst={ROUTER_MAC},dl_src={mac},in_port={port} "
            f"actions=set_field:0x1->reg2,goto_table:{table_of('ttl')}") in texts(flows,
                                                                            "classify")
    # host3 routes contoso's replies: a host route for every VM of contoso.
    route = texts(flows, "route")
    assert any("nw_dst=10.1.1.20,reg2=0x1" in t and "set_field:02:00:00:00:51:01->eth_dst" in t
               for t in route)
    assert any("nw_dst=10.1.1.20,reg2=0x2" in t and "set_field:02:00:00:00:61:01->eth_dst" in t
               for t in route)
    # Not on the switch yet: no flow names the port.
    _, without = flows_of("host3", live=set(state.ports) - {port})
    assert not any(port in describe(f) for f in without)


def test_a_domain_without_external_keeps_issue_18s_drop():
    text = GATEWAY.replace(
        "    external: {host: host3, nic: eth2, address: 203.0.113.11/24, gateway: 203.0.113.1}\n",
        "")
    state = desired_host(load(text), "host1")
    flows = desired_flows(state, set(state.ports))
    assert not any(FABRIKAM in t for t in texts(flows, "external"))
    assert not any(FABRIKAM in t and "priority=1 " in t for t in texts(flows, "route"))
    assert any(CONTOSO in t for t in texts(flows, "external"))
