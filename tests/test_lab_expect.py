"""`lab check`'s judgement, without a lab: what each probe must see (bridged, routed,
isolated, gateway) derived from examples/routing.yaml, how a probe's observation is
judged, and how a captured GRE packet is judged against its destination's VSID."""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.layers.inet import GRE, ICMP, IP
from scapy.layers.l2 import ARP, Ether
from scapy.utils import wrpcap

from ovsnvgre import fabric, nvgre
from ovsnvgre.lab import expect, topology, wire
from ovsnvgre.lab.expect import ROUTER, Outcome, Seen

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.fixture(scope="module")
def routing():
    fab = fabric.load(EXAMPLES / "routing.yaml")
    return fab, topology.build(fab)


def probes_of(topo) -> dict[tuple[str, str], expect.Probe]:
    return {(p.source, p.target): p for p in expect.matrix(topo)}


def vm(topo, name):
    return next(v for v in topo.vms if v.name == name)


def test_the_example_is_two_tenants_with_overlapping_prefixes(routing):
    fab, _ = routing
    assert set(fab.routing_domains) == {"contoso", "fabrikam"}
    for domain in fab.routing_domains:
        subnets = fab.subnets_in(domain)
        assert [str(s.prefix) for s in subnets] == ["10.1.1.0/24", "10.1.2.0/24"]
        for subnet in subnets:  # each subnet spread over both hosts
            assert {v.host for v in fab.vms_in(subnet.vsid)} == {"host1", "host2"}
    assert fab.virtual_subnets["flat"].routing_domain is None


def test_outcomes_bridged_routed_isolated(routing):
    _, topo = routing
    probes = probes_of(topo)
    def kinds(outcome):
        return {pair for pair, p in probes.items() if p.outcome is outcome}
    # Same VSID: bridged, across hosts, TTL untouched.
    assert kinds(Outcome.BRIDGED) == {(a, b) for a, b in [
        ("web-a", "web-b"), ("db-a", "db-b"), ("shop-a", "shop-b"), ("stock-a", "stock-b"),
        ("flat-a", "flat-b")] for a, b in [(a, b), (b, a)]}
    # Another subnet of the same routing domain: routed, on one host and across hosts.
    contoso, fabrikam = {"web-a", "web-b", "db-a", "db-b"}, {"shop-a", "shop-b", "stock-a",
                                                             "stock-b"}
    routed = {(a, b) for tenant in (contoso, fabrikam) for a in tenant for b in tenant
              if a.split("-")[0] != b.split("-")[0]}
    assert kinds(Outcome.ROUTED) == routed
    assert {p.ttl for p in probes.values() if p.outcome is Outcome.ROUTED} == {63}
    assert {p.ttl for p in probes.values() if p.outcome is Outcome.BRIDGED} == {64}
    # Everything else is isolated: across tenants, and to and from the L2-only subnet.
    vm_pairs = {pair for pair, p in probes.items() if p.outcome is not Outcome.GATEWAY}
    assert kinds(Outcome.ISOLATED) == vm_pairs - routed - kinds(Outcome.BRIDGED)
    assert ("web-a", "shop-b") in kinds(Outcome.ISOLATED)
    assert ("flat-a", "web-b") in kinds(Outcome.ISOLATED)
    assert ("web-b", "flat-a") in kinds(Outcome.ISOLATED)


def test_an_address_is_looked_up_in_the_source_routing_domain(routing):
    """10.1.2.21 is db-a (host1) for Contoso and stock-b (host2) for Fabrikam."""
    _, topo = routing
    assert expect.responder(topo, vm(topo, "web-a"), "10.1.2.21") == "db-a"
    assert expect.responder(topo, vm(topo, "shop-b"), "10.1.2.21") == "stock-b"
    assert expect.responder(topo, vm(topo, "flat-a"), "10.1.2.21") is None
    probes = probes_of(topo)
    # So a Contoso VM's probe towards Fabrikam's stock-b is isolated, yet answered - by db-a.
    across = probes["web-a", "stock-b"]
    assert (across.outcome, across.address, across.responder) == (Outcome.ISOLATED,
                                                                   "10.1.2.21", "db-a")
    # And towards Fabrikam's shop-a (10.1.1.10): web-a's own address.
    assert probes["web-a", "shop-a"].responder == "web-a"


def test_gateways_and_the_l2_only_subnet(routing):
    """Each VM of a routed subnet pings every gateway of its domain and routes via its
    own; flat-a holds 10.1.1.1, web's gateway address, which only flat reaches."""
    _, topo = routing
    assert vm(topo, "web-a").gateway is not None and str(vm(topo, "web-a").gateway) == "10.1.1.1"
    assert str(vm(topo, "db-b").gateway) == "10.1.2.1"
    assert vm(topo, "flat-a").gateway is None and vm(topo, "flat-a").routing_domain is None
    gateways = {(p.source, p.address) for p in expect.matrix(topo)
                if p.outcome is Outcome.GATEWAY}
    routed_vms = [v.name for v in topo.vms if v.routing_domain]
    assert gateways == {(name, gw) for name in routed_vms for gw in ("10.1.1.1", "10.1.2.1")}
    probes = probes_of(topo)
    assert probes["flat-b", "flat-a"].outcome is Outcome.BRIDGED
    assert probes["flat-b", "flat-a"].responder == "flat-a"
    assert probes["web-a", "flat-a"].responder == ROUTER  # the router, not flat-a
    assert topo.router_mac == "02:00:5e:00:01:01"


def test_without_routing_domains_only_the_vsid_matters():
    fab = fabric.load(EXAMPLES / "hnv-two-host.yaml")
    probes = expect.matrix(topology.build(fab))
    assert {(p.source, p.target) for p in probes if p.expected} == {
        ("red-a", "red-b"), ("red-b", "red-a"), ("blue-a", "blue-b"), ("blue-b", "blue-a")}
    assert not any(p.outcome in (Outcome.ROUTED, Outcome.GATEWAY) for p in probes)


# --- judging one probe ------------------------------------------------------------


def test_a_routed_pair_that_is_dropped_fails(routing):
    probe = probes_of(routing[1])["web-a", "db-b"]
    assert expect.problems(probe, Seen(replied=True, ttls=(63, 63, 63),
                                       answered_by="db-b", tcp=True)) == []
    assert expect.problems(probe, Seen(replied=False)) == ["no reply"]
    assert not expect.reached(probe, Seen(replied=False))


def test_a_routed_reply_with_an_untouched_ttl_or_from_the_wrong_vm_fails(routing):
    probe = probes_of(routing[1])["web-a", "db-a"]
    assert expect.problems(probe, Seen(True, (64, 64, 64), "db-a")) == [
        "reply TTL 64, expected 63"]
    assert expect.problems(probe, Seen(True, (63,), "stock-b")) == [
        "answered by stock-b, not db-a"]
    assert expect.problems(probe, Seen(True, (63,), "db-a", tcp=False)) == ["TCP failed"]
    # A routed reply that cannot be identified (no whoami service there) counts by TTL.
    assert expect.problems(probe, Seen(True, (63,), None)) == []
    assert expect.reached(probe, Seen(True, (63,), None))


def test_an_isolated_pair_that_answers_fails(routing):
    probes = probes_of(routing[1])
    across = probes["web-a", "stock-b"]  # 10.1.2.21: db-a in Contoso's view
    assert expect.problems(across, Seen(True, (63,), "db-a")) == []
    assert not expect.reached(across, Seen(True, (63,), "db-a"))
    assert expect.problems(across, Seen(True, (63,), "stock-b")) == [
        "stock-b answered, but the fabric isolates it from web-a"]
    nobody = probes["web-a", "flat-b"]  # 10.1.1.2: nobody in Contoso's view
    assert expect.problems(nobody, Seen(False)) == []
    assert expect.problems(nobody, Seen(True, (64,), None)) == [
        "answered by an unknown host, expected no answer"]
    assert expect.problems(nobody, Seen(True, (64,), "flat-b")) == [
        "flat-b answered, but the fabric isolates it from web-a"]
    # A leak to TCP (or ARP) only is a leak too.
    assert expect.problems(across, Seen(False, (), "stock-b")) == [
        "stock-b answered, but the fabric isolates it from web-a"]


def test_a_gateway_must_be_answered_by_the_router(routing):
    gateway = probes_of(routing[1])["web-a", "gateway of web"]
    assert expect.problems(gateway, Seen(True, (255,), ROUTER)) == []
    assert expect.problems(gateway, Seen(False)) == ["no reply"]
    assert expect.problems(gateway, Seen(True, (64,), "flat-a")) == [
        "answered by flat-a, not router"]


# --- judging the wire -------------------------------------------------------------

ROUTER_MAC = "02:00:5e:00:01:01"


def gre(key: int, inner) -> Ether:
    return (Ether() / IP(src="192.168.1.11", dst="192.168.2.11") /
            GRE(key_present=1, key=key, proto=0x6558) / inner)


def judge(routing, tmp_path, *packets) -> wire.WireResult:
    fab, topo = routing
    path = tmp_path / "host1.pcap"
    wrpcap(str(path), list(packets))
    return wire.judge(fab, topo, set(), [path])


def test_a_routed_frame_crosses_with_the_destination_vsid(routing, tmp_path):
    web, db = nvgre.tunnel_key(5001, "rfc7637"), nvgre.tunnel_key(5002, "rfc7637")
    to_db_b = Ether(src=ROUTER_MAC, dst="02:00:00:00:50:04") / IP(
        src="10.1.1.10", dst="10.1.2.20", ttl=63) / ICMP()
    assert judge(routing, tmp_path, gre(db, to_db_b)).problems == []
    wrong = judge(routing, tmp_path, gre(web, to_db_b))
    assert wrong.problems == ["host1: key 0x138900 (VSID 5001) carries a frame to db-b "
                              "(VSID 5002)"]


def test_flooded_frames_carry_their_sender_vsid_and_gateways_never_cross(routing, tmp_path):
    web = nvgre.tunnel_key(5001, "rfc7637")
    arp_for = {ip: Ether(src="02:00:00:00:50:01", dst="ff:ff:ff:ff:ff:ff") /
               ARP(psrc="10.1.1.10", pdst=ip, hwsrc="02:00:00:00:50:01") for ip in
               ("10.1.1.11", "10.1.1.1")}
    assert judge(routing, tmp_path, gre(web, arp_for["10.1.1.11"])).problems == []
    assert judge(routing, tmp_path, gre(web, arp_for["10.1.1.1"])).problems == [
        "host1: key 0x138900: a frame for 10.1.1.1, a gateway of routing domain contoso, "
        "crossed the underlay"]
    # flat (no routing domain) may ARP for 10.1.1.1: that is flat-a.
    flat = nvgre.tunnel_key(7001, "rfc7637")
    flat_arp = Ether(src="02:00:00:00:70:02", dst="ff:ff:ff:ff:ff:ff") / ARP(
        psrc="10.1.1.2", pdst="10.1.1.1", hwsrc="02:00:00:00:70:02")
    assert judge(routing, tmp_path, gre(flat, flat_arp)).problems == []
    # A web VM's broadcast with flat's key leaks across tenants.
    assert judge(routing, tmp_path, gre(flat, arp_for["10.1.1.11"])).problems == [
        "host1: key 0x1b5900 floods a frame from 02:00:00:00:50:01, which is no VM of "
        "VSID 7001"]


def test_every_key_that_must_cross_is_listed(routing, tmp_path):
    fab, topo = routing
    keys = wire.expected_keys(fab, topo)
    assert keys == {nvgre.tunnel_key(v, "rfc7637") for v in (5001, 5002, 6001, 6002, 7001)}
    path = tmp_path / "host1.pcap"
    wrpcap(str(path), [])
    missing = wire.judge(fab, topo, keys, [path])
    assert len(missing.problems) == 5 and not missing.ok
