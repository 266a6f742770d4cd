"""Preflight on plain data: every shape of uplink it refuses or warns of, named in one line."""

from __future__ import annotations

import ipaddress

import pytest
from fabrics import TWO_HOSTS
from test_desired_plan import converged

from ovsnvgre import fabric
from ovsnvgre.actual import ActualKernel, ActualPort, ActualSwitch, LinkState
from ovsnvgre.desired import RouteSpec, desired_host
from ovsnvgre.plan import make_plan
from ovsnvgre.preflight import preflight

FAB = fabric.loads(TWO_HOSTS, "f.yaml")
HOST1 = desired_host(FAB, "host1")
PA = ipaddress.ip_interface("198.51.100.11/24")
EMPTY = ActualSwitch(bridges={}, ports={})


def uplink(**extra) -> LinkState:
    return LinkState("eth1", True, frozenset([PA]), frozenset(), mac="02:00:00:00:00:11",
                     **extra)


def kernel(link: LinkState | None = None, everywhere: dict | None = None) -> ActualKernel:
    links = {"eth1": link or uplink()}
    return ActualKernel(links, everywhere if everywhere is not None else {PA: "eth1"})


def test_a_plain_static_uplink_passes():
    assert preflight(HOST1, EMPTY, kernel()) == ([], [])


@pytest.mark.parametrize("kind", ["bridge", "bond", "team", "vrf"])
def test_a_foreign_master_is_named(kind):
    blockers, _ = preflight(HOST1, EMPTY, kernel(uplink(master="m0", master_kind=kind)))
    assert blockers == [f"the uplink eth1 is enslaved to {kind} m0: ovsnvgre takes over a "
                        "NIC only from no master (release it first, or name another uplink)"]


def test_the_kernel_datapaths_own_master_is_fine_when_the_port_is_ours():
    switch = converged(HOST1)
    switch.port_of_interface.update({name: name for name in switch.ports})
    link = uplink(master="ovs-system", master_kind="openvswitch")
    assert preflight(HOST1, switch, kernel(link))[0] == []


def test_a_foreign_ovs_bond_port_is_named():
    bond = ActualPort("bond0", "br-phys", "", {}, {}, {}, interfaces=2)
    switch = ActualSwitch({}, {"bond0": bond}, port_of_interface={"eth1": "bond0",
                                                                  "eth2": "bond0"})
    blockers, _ = preflight(HOST1, switch, kernel())
    assert blockers == ["the uplink eth1 is in bond port bond0 of OVS bridge br-phys, which "
                        "ovsnvgre did not create: take it out of there first, or name another "
                        "uplink"]


def test_a_missing_uplink_is_named_with_its_place_in_the_fabric():
    blockers, _ = preflight(HOST1, EMPTY, ActualKernel({}, {}))
    assert blockers == ["the uplink eth1 (hosts.host1.uplink) does not exist on this machine: "
                        "name the NIC that carries the PA"]


def test_leased_addresses_and_dhcp_routes_are_refused_until_the_uplink_is_ours():
    dhcp = RouteSpec(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_address("198.51.100.1"),
                     proto=16)
    link = uplink(leased=frozenset([PA]), dynamic_routes=frozenset([dhcp]))
    blockers, _ = preflight(HOST1, EMPTY, kernel(link))
    assert len(blockers) == 2
    assert blockers[0].startswith("the uplink eth1's address 198.51.100.11/24 is leased")
    assert blockers[1].startswith("the uplink eth1's route default via 198.51.100.1 comes "
                                  "from a DHCP client")


def test_the_pa_on_any_other_link_is_refused():
    everywhere = {PA: "eth1", ipaddress.ip_interface("198.51.100.11/32"): "eth3"}
    blockers, _ = preflight(HOST1, EMPTY, kernel(everywhere=everywhere))
    assert blockers == ["the PA 198.51.100.11 is already configured on eth3, which is "
                        "neither the uplink nor the tep port: remove it there first"]


@pytest.mark.parametrize("datapath,refused", [("netdev", False), ("system", True)])
def test_a_macvlan_parent_is_refused_only_by_the_kernel_datapath(datapath, refused):
    fab = fabric.loads(TWO_HOSTS.replace("datapath_type: netdev",
                                         f"datapath_type: {datapath}"), "f.yaml")
    link = uplink(uppers={"mv0": "macvlan", "eth1.10": "vlan"})
    blockers, warnings = preflight(desired_host(fab, "host1"), EMPTY, kernel(link))
    assert bool(blockers) == refused and bool(warnings) != refused
    assert "macvlan mv0" in (blockers or warnings)[0] and "vlan eth1.10" in (blockers or
                                                                             warnings)[0]


def test_a_blocked_plan_changes_nothing_and_says_why():
    plan = make_plan(HOST1, EMPTY, ActualKernel({}, {}))
    assert plan.blockers and not plan.ovsdb and not plan.kernel


def test_the_tep_port_takes_the_uplinks_mac():
    plan = make_plan(HOST1, EMPTY, kernel())
    tep = next(c for c in plan.ovsdb if getattr(c, "spec", None) and c.spec.name == "tep0")
    assert tep.spec.mac == "02:00:00:00:00:11"


def test_the_loopback_is_no_uplink():
    lo = LinkState("eth1", True, frozenset(), frozenset(), loopback=True)
    blockers, _ = preflight(HOST1, EMPTY, kernel(lo, everywhere={}))
    assert blockers == ["the uplink eth1 (hosts.host1.uplink) is the loopback device: name the "
                        "NIC that carries the PA"]
