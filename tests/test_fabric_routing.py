"""Routing domains in the fabric file (issue 18): what loads, and each refusal in one line
naming the file, the line and the entry."""

from __future__ import annotations

import ipaddress

import pytest
from fabrics import ROUTED, load, refuse

from ovsnvgre.errors import FabricError
from ovsnvgre.model import Overlay, VirtualSubnet


def test_the_routed_fabric_loads_with_its_domains_prefixes_and_gateways():
    fab = load(ROUTED)
    assert list(fab.routing_domains) == ["contoso", "fabrikam"]
    web, flat = fab.virtual_subnets["web"], fab.virtual_subnets["flat"]
    assert web.prefix == ipaddress.IPv4Network("10.1.1.0/24")
    assert web.routing_domain == "contoso"
    assert web.gateway == ipaddress.IPv4Address("10.1.1.1")
    assert flat.prefix is None and flat.routing_domain is None and flat.gateway is None
    assert [s.name for s in fab.subnets_in("contoso")] == ["web", "db", "app"]
    assert [s.name for s in fab.subnets_in("fabrikam")] == ["other", "data"]
    assert fab.subnets_in("nobody") == ()
    assert fab.routing_domain_of(fab.vms["db-b"]) == "contoso"
    assert fab.routing_domain_of(fab.vms["flat-a"]) is None
    assert fab.overlay.router_mac == Overlay().router_mac == "02:00:5e:00:01:01"


def test_a_fabric_without_routing_domains_is_as_before():
    fab = load("fabric: f\nhosts:\n  h: {pa: 192.168.1.11/24}\n"
               "virtual_subnets:\n  red: {vsid: 5001}\n")
    assert fab.routing_domains == {}
    assert fab.virtual_subnets["red"] == VirtualSubnet("red", 5001)


def test_a_domain_written_with_no_value_is_a_domain():
    fab = load(ROUTED.replace("  fabrikam: {}", "  fabrikam:"))
    assert "fabrikam" in fab.routing_domains


def test_a_prefix_without_a_routing_domain_checks_the_vms_only():
    flat = ROUTED.replace("  flat:  {vsid: 7001}", "  flat:  {vsid: 7001, prefix: 10.1.1.0/24}")
    fab = load(flat)
    assert fab.virtual_subnets["flat"].prefix == ipaddress.IPv4Network("10.1.1.0/24")
    assert fab.virtual_subnets["flat"].routing_domain is None
    # No router in an L2-only subnet: its first address may be a VM's (the tenant's own
    # router, say), and the fabric names no gateway for it.
    assert fab.vms["flat-a"].ca.ip == ipaddress.IPv4Address("10.1.1.1")
    assert fab.virtual_subnets["flat"].gateway is None
    with pytest.raises(FabricError, match="network address"):
        load(flat.replace("ca: 10.1.1.1/24}", "ca: 10.1.1.0/24}"))
    # Without its prefix, the same VM may hold what is a gateway address in both domains.
    assert load(ROUTED).vms["flat-a"].ca.ip == ipaddress.IPv4Address("10.1.1.1")


def test_a_router_mac_may_be_written_unquoted():
    fab = load(ROUTED.replace("tunnel_ports: per-vsid}",
                              "tunnel_ports: per-vsid, router_mac: 52:00:00:12:34:56}"))
    assert fab.overlay.router_mac == "52:00:00:12:34:56"


# Each case: a change to ROUTED, the line the error must name, and words it must hold.
CASES = [
    ("routing_domain: contoso,  prefix: 10.1.2.0/24}", "routing_domain: contoso}", 12,
     ["virtual_subnets.db.routing_domain", "needs a prefix"]),
    ("  app:   {vsid: 5003, routing_domain: contoso,", "  app:   {vsid: 5003, routing_domain: "
     "northwind,", 13, ["virtual_subnets.app.routing_domain", "unknown routing domain "
                        "'northwind'", "contoso, fabrikam"]),
    ("prefix: 10.1.3.0/24}", "prefix: 10.1.0.0/16}", 13,
     ["virtual_subnets.app.prefix", "10.1.0.0/16 overlaps 10.1.1.0/24", "'web'", "'contoso'"]),
    ("prefix: 10.1.1.0/24}\n  db", "prefix: 10.1.0.0/16}\n  db", 12,
     ["virtual_subnets.db.prefix", "10.1.2.0/24 overlaps 10.1.0.0/16", "'web'"]),
    ("prefix: 10.1.3.0/24}", "prefix: 10.1.2.0/24}", 13,
     ["virtual_subnets.app.prefix", "overlaps 10.1.2.0/24 of subnet 'db'"]),
    ("prefix: 10.1.3.0/24}", "prefix: 10.1.3.5/24}", 13,
     ["virtual_subnets.app.prefix", "host bits", "10.1.3.0/24"]),
    ("prefix: 10.1.3.0/24}", "prefix: fd00::/64}", 13,
     ["virtual_subnets.app.prefix", "'fd00::/64' is not an IPv4 prefix"]),
    ("prefix: 10.1.3.0/24}", "prefix: 10.1.3.0}", 13,
     ["virtual_subnets.app.prefix", "not an IPv4 prefix"]),
    ("prefix: 10.1.3.0/24}", "prefix: 10.1.3.0/31}", 13,
     ["virtual_subnets.app.prefix", "too small", "/30"]),
    ("ca: 10.1.3.20/24}", "ca: 10.1.4.20/24}", 23,
     ["vms.app-b.ca", "10.1.4.20/24 lies outside the prefix 10.1.3.0/24 of subnet 'app'"]),
    ("ca: 10.1.3.20/24}", "ca: 10.1.3.20/16}", 23,
     ["vms.app-b.ca", "prefix length 16", "10.1.3.0/24"]),
    ("ca: 10.1.3.20/24}", "ca: 10.1.3.0/24}", 23, ["vms.app-b.ca", "network address"]),
    ("ca: 10.1.3.20/24}", "ca: 10.1.3.255/24}", 23, ["vms.app-b.ca", "broadcast address"]),
    ("ca: 10.1.3.20/24}", "ca: 10.1.3.1/24}", 23, ["vms.app-b.ca", "10.1.3.1", "gateway"]),
    ("ca: 10.1.3.20/24}", 'ca: "fd00::20/64"}', 23, ["vms.app-b.ca", "lies outside"]),
    ("tunnel_ports: per-vsid}", "tunnel_ports: per-vsid, router_mac: \"03:00:00:00:01:01\"}",
     3, ["overlay.router_mac", "03:00:00:00:01:01", "locally administered unicast"]),
    ("tunnel_ports: per-vsid}", "tunnel_ports: per-vsid, router_mac: \"00:11:22:33:44:55\"}",
     3, ["overlay.router_mac", "locally administered"]),
    ("tunnel_ports: per-vsid}", "tunnel_ports: per-vsid, router_mac: \"02:00:5e\"}",
     3, ["overlay.router_mac", "not a MAC"]),
    ('mac: "02:00:00:00:53:02"', 'mac: "02:00:5e:00:01:01"', 23,
     ["vms.app-b.mac", "distributed router's MAC"]),
    ("  contoso: {}", "  contoso: {rdid: 1}", 8, ["routing_domains.contoso.rdid",
                                                  "unknown key"]),
    ("  contoso: {}", "  on: {}", 8, ["routing_domains.on", 'quotes: "on"']),
    ("  app:   {vsid: 5003, routing_domain: contoso,", "  app:   {vsid: 5003, routing_domain: "
     "yes,", 13, ["virtual_subnets.app.routing_domain", 'quotes: "yes"']),
]


@pytest.mark.parametrize("old,new,line,words", CASES, ids=[c[1][:40] for c in CASES])
def test_routing_refusals_name_file_line_and_entry(old, new, line, words):
    assert old in ROUTED
    message = refuse(ROUTED.replace(old, new, 1))
    assert message.startswith(f"f.yaml:{line}:"), message
    for word in words:
        assert word in message, message


def test_prefixes_may_overlap_across_domains_and_the_router_mac_in_an_l2_subnet():
    fab = load(ROUTED.replace('"02:00:00:00:71:01"', '"02:00:5e:00:01:01"'))
    assert fab.virtual_subnets["other"].prefix == fab.virtual_subnets["web"].prefix
    assert fab.vms["flat-a"].mac == fab.overlay.router_mac
