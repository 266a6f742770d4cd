"""Desired state and the diff, on plain data (the switch tests prove the I/O)."""

import ipaddress

import pytest
from fabrics import TWO_HOSTS

from ovsnvgre import fabric
from ovsnvgre.actual import (
    ActualBridge,
    ActualKernel,
    ActualPort,
    ActualSwitch,
    LinkState,
    PortStatus,
)
from ovsnvgre.changes import (
    AddressChange,
    BridgeCreate,
    BridgeDelete,
    PortCreate,
    PortDelete,
    PortUpdate,
    RouteChange,
)
from ovsnvgre.desired import OWNER_KEY, RouteSpec, desired_host
from ovsnvgre.errors import SystemFailure
from ovsnvgre.plan import diff_switch, handle_candidates, make_plan, reattach
from ovsnvgre.underlay import decode_saved, encode_tep, tep_contents

FAB = fabric.loads(TWO_HOSTS, "f.yaml")
# The uplink exists, bare: the host of a fresh lab before its PA is configured.
NO_KERNEL = ActualKernel({"eth1": LinkState("eth1", True, frozenset(), frozenset())})
EMPTY = ActualSwitch(bridges={}, ports={})


def converged(desired, saved=([], [])) -> ActualSwitch:
    """The switch as `up` leaves it, written out as data (``saved``: what the uplink
    held, which the tep port holds now)."""
    bridges = {}
    ports = {}
    for spec in desired.bridges.values():
        members = [p.name for p in desired.ports.values() if p.bridge == spec.name]
        bridges[spec.name] = ActualBridge(spec.name, spec.datapath_type,
                                          tuple(sorted(spec.protocols)), spec.fail_mode,
                                          dict(spec.external_ids),
                                          tuple(sorted([spec.name, *members])))
        ports[spec.name] = ActualPort(spec.name, spec.name, "internal", {},
                                      dict(spec.external_ids), dict(spec.external_ids))
    for spec in desired.ports.values():
        records = encode_tep(tep_contents(desired, saved)) if spec.role == "tep" else {}
        ports[spec.name] = ActualPort(spec.name, spec.bridge, spec.iface_type,
                                      dict(spec.options), {**spec.external_ids, **records},
                                      dict(spec.external_ids), bfd=dict(spec.bfd),
                                      mtu_request=spec.mtu_request)
    return ActualSwitch(bridges, ports)


def test_per_vsid_ports_only_where_both_hosts_have_the_vsid():
    fab = fabric.loads(TWO_HOSTS.replace("  red:  {vsid: 5001}", "  red:  {vsid: 5001}\n"
                                         "  green: {vsid: 7001}")
                       + '  green-a: {host: host1, subnet: green, port: vnet2, '
                         'mac: "02:00:00:00:70:01", ca: 10.0.0.1/24}\n', "f.yaml")
    state = desired_host(fab, "host1")
    tunnels = {n: p for n, p in state.ports.items() if p.role == "tunnel"}
    assert sorted(tunnels) == ["gcb00710b001389", "gcb00710b001771"]
    red = tunnels["gcb00710b001389"]
    assert red.options == {"remote_ip": "203.0.113.11", "local_ip": "198.51.100.11",
                           "csum": "false", "key": str(5001 << 8)}
    assert red.external_ids["ovsnvgre-peer"] == "host2"
    assert red.external_ids["ovsnvgre-vsid"] == "5001"


def test_no_tunnel_for_a_vsid_only_one_host_has():
    text = TWO_HOSTS.replace("  blue-b: {host: host2, subnet: blue, port: vnet1, "
                             'mac: "02:00:00:00:60:02", ca: 10.0.0.2/24}\n', "")
    state = desired_host(fabric.loads(text, "f.yaml"), "host1")
    keys = {p.options["key"] for p in state.ports.values() if p.role == "tunnel"}
    assert keys == {str(5001 << 8)}


def test_per_peer_mode_one_port_with_flow_key():
    fab = fabric.loads(TWO_HOSTS.replace("per-vsid", "per-peer"), "f.yaml")
    tunnels = [p for p in desired_host(fab, "host1").ports.values() if p.role == "tunnel"]
    assert [(p.name, p.options["key"]) for p in tunnels] == [("gre-cb00710b", "flow")]


def test_flow_mode_one_port_for_every_peer():
    fab = fabric.loads(TWO_HOSTS.replace("per-vsid", "flow"), "f.yaml")
    tunnels = [p for p in desired_host(fab, "host1").ports.values()
               if p.role.startswith("tunnel")]
    assert [(p.name, p.role, p.iface_type, p.options, p.bfd) for p in tunnels] == [
        ("gre-flow", "tunnel-flow", "gre", {"remote_ip": "flow", "local_ip": "198.51.100.11",
                                            "csum": "false", "key": "flow"}, {})]
    # No peer of its own: the flows name the peers.
    assert "ovsnvgre-peer" not in tunnels[0].external_ids
    alone = fabric.loads("fabric: f\noverlay: {tunnel_ports: flow}\nhosts:\n"
                         "  a: {pa: 192.168.1.1/24}\n  b: {pa: 192.168.1.2/24}\n", "f.yaml")
    assert "gre-flow" not in desired_host(alone, "a").ports


def test_per_vsid_rfc7637_adds_one_receive_only_port_per_peer():
    # Fixed-key ports take FlowID 0 only (OVS matches a received key exactly); the
    # port with in_key=flow takes every other FlowID (RFC 7637 section 3.2).
    state = desired_host(FAB, "host1")
    receive = [p for p in state.ports.values() if p.role == "tunnel-receive"]
    assert [(p.name, p.options) for p in receive] == [
        ("gre-cb00710b", {"remote_ip": "203.0.113.11", "local_ip": "198.51.100.11",
                          "csum": "false", "in_key": "flow"})]
    assert receive[0].external_ids["ovsnvgre-peer"] == "host2"
    assert "key" not in receive[0].options and receive[0].bfd == {}


@pytest.mark.parametrize("mode,layout", [("per-peer", "rfc7637"), ("per-vsid", "plain")])
def test_no_receive_only_port_where_the_tunnel_port_takes_every_key(mode, layout):
    fab = fabric.loads(TWO_HOSTS.replace("per-vsid", mode).replace("rfc7637", layout),
                       "f.yaml")
    assert not [p for p in desired_host(fab, "host1").ports.values()
                if p.role == "tunnel-receive"]


def test_plain_layout_key_is_vsid():
    fab = fabric.loads(TWO_HOSTS.replace("key_layout: rfc7637", "key_layout: plain"), "f.yaml")
    keys = {p.options["key"] for p in desired_host(fab, "host1").ports.values()
            if p.role == "tunnel"}
    assert keys == {"5001", "6001"}


def test_no_peer_shares_a_vsid_means_no_tunnel():
    fab = fabric.loads("fabric: f\nhosts:\n  a: {pa: 192.168.1.1/24}\n"
                       "  b: {pa: 192.168.1.2/24}\n", "f.yaml")
    assert [p for p in desired_host(fab, "a").ports.values() if p.role == "tunnel"] == []


def test_every_row_carries_the_owner_marker():
    state = desired_host(FAB, "host1")
    for spec in [*state.bridges.values(), *state.ports.values()]:
        assert spec.external_ids[OWNER_KEY] == "contoso"


def test_integration_bridge_drops_without_flows():
    state = desired_host(FAB, "host1")
    assert state.bridges["br-int"].fail_mode == "secure"
    assert "OpenFlow13" in state.bridges["br-int"].protocols


def test_peer_routes_via_gateway_only_when_not_on_link():
    state = desired_host(FAB, "host1")
    assert state.peer_routes == (RouteSpec(ipaddress.ip_network("203.0.113.0/24"),
                                           ipaddress.ip_address("198.51.100.1")),)
    same_subnet = fabric.loads("fabric: f\nhosts:\n  a: {pa: 192.168.1.1/24, gateway: "
                               "192.168.1.254}\n  b: {pa: 192.168.1.2/24}\n", "f.yaml")
    assert desired_host(same_subnet, "a").peer_routes == ()


def test_plan_from_empty_creates_everything():
    desired = desired_host(FAB, "host1")
    plan = make_plan(desired, EMPTY, NO_KERNEL)
    created = {c.spec.name for c in plan.ovsdb if isinstance(c, (BridgeCreate, PortCreate))}
    assert created == {"br0", "br-int", "tep0", "eth1", "vnet0", "vnet1",
                       "gcb00710b001389", "gcb00710b001771", "gre-cb00710b"}
    assert AddressChange("add", "tep0", ipaddress.ip_interface("198.51.100.11/24")) in plan.kernel


def test_converged_switch_plans_nothing():
    desired = desired_host(FAB, "host1")
    tep = LinkState("tep0", True, frozenset({desired.pa}), frozenset(desired.peer_routes))
    uplink = LinkState("eth1", True, frozenset(), frozenset())
    plan = make_plan(desired, converged(desired), ActualKernel({"eth1": uplink, "tep0": tep}))
    assert plan.empty, plan.lines()


def test_uplink_addresses_and_routes_move_to_tep_and_are_recorded():
    desired = desired_host(FAB, "host1")
    default = RouteSpec(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_address("198.51.100.1"),
                        proto=3)
    extra = ipaddress.ip_interface("198.51.100.99/24")
    uplink = LinkState("eth1", True, frozenset({desired.pa, extra}), frozenset({default}))
    plan = make_plan(desired, EMPTY, ActualKernel({"eth1": uplink}))
    assert plan.kernel[:3] == (RouteChange("delete", "eth1", default),
                               AddressChange("delete", "eth1", desired.pa),
                               AddressChange("delete", "eth1", extra))
    assert AddressChange("add", "tep0", extra) in plan.kernel
    assert RouteChange("add", "tep0", default) in plan.kernel
    uplink_port = next(c for c in plan.ovsdb if isinstance(c, PortCreate)
                       and c.spec.name == "eth1")
    addresses, routes = decode_saved(uplink_port.extra_ids)
    assert set(addresses) == {desired.pa, extra}
    assert routes == [default] and routes[0].proto == 3


def test_drift_is_repaired_and_stale_owned_rows_removed():
    desired = desired_host(FAB, "host1")
    actual = converged(desired)
    tunnel = actual.ports["gcb00710b001389"]
    edited = ActualPort(tunnel.name, tunnel.bridge, "gre", {**tunnel.options, "key": "99",
                                                             "ttl": "5"},
                        tunnel.external_ids, tunnel.iface_external_ids)
    stale = ActualPort("gcb00710b00abcd", "br-int", "gre", {}, dict(tunnel.external_ids),
                       {})
    ports = {**actual.ports, tunnel.name: edited, stale.name: stale}
    changes, _ = diff_switch(desired, ActualSwitch(actual.bridges, ports))
    update = next(c for c in changes if isinstance(c, PortUpdate))
    assert update.spec.name == tunnel.name and update.options == tunnel.options
    assert PortDelete("gcb00710b00abcd", "br-int", "tunnel") in changes
    assert len(changes) == 2


def test_foreign_rows_are_never_touched():
    desired = desired_host(FAB, "host1")
    actual = converged(desired)
    foreign_port = ActualPort("foreign0", "br-int", "", {}, {"owner": "someone"}, {})
    foreign_bridge = ActualBridge("br-other", "netdev", (), None, {}, ("br-other",))
    changes, _ = diff_switch(desired, ActualSwitch(
        {**actual.bridges, "br-other": foreign_bridge},
        {**actual.ports, "foreign0": foreign_port,
         "br-other": ActualPort("br-other", "br-other", "internal", {}, {}, {})}))
    assert changes == []


def test_a_foreign_bridge_with_our_name_is_refused():
    desired = desired_host(FAB, "host1")
    foreign = ActualBridge("br0", "system", (), None, {}, ("br0",))
    with pytest.raises(SystemFailure, match="bridge br0 already exists and was not created"):
        diff_switch(desired, ActualSwitch({"br0": foreign}, {}))


def test_a_vm_port_the_hypervisor_put_on_the_bridge_is_left_alone():
    desired = desired_host(FAB, "host1")
    actual = converged(desired)
    libvirt_port = ActualPort("vnet0", "br-int", "", {}, {"iface-id": "abc"}, {})
    changes, _ = diff_switch(desired, ActualSwitch(actual.bridges,
                                                  {**actual.ports, "vnet0": libvirt_port}))
    assert changes == []


def test_a_vm_port_on_another_bridge_is_refused():
    desired = desired_host(FAB, "host1")
    actual = converged(desired)
    elsewhere = ActualPort("vnet0", "virbr0", "", {}, {}, {})
    with pytest.raises(SystemFailure, match="port vnet0 already exists on bridge virbr0"):
        diff_switch(desired, ActualSwitch(actual.bridges, {**actual.ports, "vnet0": elsewhere}))


def test_down_keeps_a_bridge_that_holds_foreign_ports():
    desired = desired_host(FAB, "host1")
    actual = converged(desired)
    br_int = actual.bridges["br-int"]
    bridges = {**actual.bridges, "br-int": ActualBridge(
        br_int.name, br_int.datapath_type, br_int.protocols, br_int.fail_mode,
        br_int.external_ids, (*br_int.ports, "foreign0"))}
    ports = {**actual.ports, "foreign0": ActualPort("foreign0", "br-int", "", {}, {}, {})}
    changes, notes = diff_switch(desired, ActualSwitch(bridges, ports), removing=True)
    assert BridgeDelete("br0") in changes and BridgeDelete("br-int") not in changes
    removed = {c.name for c in changes if isinstance(c, PortDelete)}
    assert removed == {"vnet0", "vnet1", "gcb00710b001389", "gcb00710b001771",
                       "gre-cb00710b"}
    assert "foreign0" in notes[0]


def with_ofports(actual: ActualSwitch) -> ActualSwitch:
    """``actual`` with every port open in ovs-vswitchd, except vnet1 (its VM is off)."""
    status = PortStatus({name: (number, None) for number, name in enumerate(actual.ports, 1)})
    status["vnet1"] = (-1, "could not open network device vnet1 (No such device)")
    return ActualSwitch(actual.bridges, actual.ports, status)


def test_only_open_vm_ports_on_userspace_bridges_can_hold_a_stale_device():
    desired = desired_host(FAB, "host1")
    assert handle_candidates(desired, with_ofports(converged(desired))) == {"vnet0"}
    kernel_dp = desired_host(fabric.loads(TWO_HOSTS.replace("datapath_type: netdev",
                                                            "datapath_type: system"), "f.yaml"),
                             "host1")
    assert handle_candidates(kernel_dp, with_ofports(converged(kernel_dp))) == set()


def test_an_owned_stale_vm_port_is_removed_and_added_again():
    desired = desired_host(FAB, "host1")
    actual = converged(desired)
    tep = LinkState("tep0", True, frozenset({desired.pa}), frozenset(desired.peer_routes))
    uplink = LinkState("eth1", True, frozenset(), frozenset())
    kernel = ActualKernel({"eth1": uplink, "tep0": tep}, stale={"vnet0": 11})
    plan = make_plan(desired, actual, kernel)
    assert not plan.kernel
    delete, create = plan.ovsdb
    assert delete == PortDelete("vnet0", "br-int", "vm", reattach=delete.reattach)
    assert "re-created (now ifindex 11)" in delete.reattach
    assert create == PortCreate(desired.ports["vnet0"])
    assert delete.describe().startswith("remove vm port vnet0 from br-int to attach it again")


def test_a_stale_vm_port_the_hypervisor_made_is_only_reported():
    desired = desired_host(FAB, "host1")
    actual = converged(desired)
    libvirt_port = ActualPort("vnet0", "br-int", "", {}, {"iface-id": "abc"}, {})
    ports = {**actual.ports, "vnet0": libvirt_port}
    changes, notes = reattach(desired, ActualSwitch(actual.bridges, ports),
                              ActualKernel({}, stale={"vnet0": 11}), [])
    assert changes == []
    assert notes[0].startswith("VM port vnet0 (red-a) is dead: its device vnet0 was deleted")
    assert "does not re-create it" in notes[0]
