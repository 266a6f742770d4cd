"""Snapshots, the changes that restore them, and what the underlay check probes: plain data."""

import ipaddress
import json

from fabrics import TWO_HOSTS
from test_desired_plan import converged

from ovsnvgre import fabric, family
from ovsnvgre.actual import ActualBridge, ActualKernel, ActualPort, ActualSwitch, LinkState
from ovsnvgre.changes import (
    AddressChange,
    BridgeCreate,
    BridgeDelete,
    LinkDown,
    LinkUp,
    Plan,
    PortCreate,
    RouteChange,
)
from ovsnvgre.desired import RouteSpec, desired_host
from ovsnvgre.pipeline import desired_flows
from ovsnvgre.plan import make_plan
from ovsnvgre.safe import snapshot
from ovsnvgre.safe.verify import targets, touches_underlay
from ovsnvgre.underlay import SAVED_ADDRESSES_KEY, encode_saved

FAB = fabric.loads(TWO_HOSTS, "f.yaml")
HOST1 = desired_host(FAB, "host1")
PA = ipaddress.ip_interface("198.51.100.11/24")
GATEWAY = ipaddress.ip_address("198.51.100.1")
DEFAULT = RouteSpec(dst=ipaddress.ip_network("0.0.0.0/0"), gateway=GATEWAY, proto=3)
EMPTY = ActualSwitch(bridges={}, ports={})


def link(name, addresses=(), routes=(), up=True) -> LinkState:
    return LinkState(name, up, frozenset(addresses), frozenset(routes))


FRESH_KERNEL = ActualKernel({"eth1": link("eth1", [PA], [DEFAULT])})
UP_KERNEL = ActualKernel({"eth1": link("eth1"),
                         "tep0": link("tep0", [PA], [DEFAULT, *HOST1.peer_routes])})


def up_switch() -> ActualSwitch:
    """The switch after `up`, with the uplink's record of what it held."""
    state = converged(HOST1, ([PA], [DEFAULT]))
    uplink = state.ports["eth1"]
    ids = {**uplink.external_ids, **encode_saved([PA], [DEFAULT])}
    state.ports["eth1"] = ActualPort(uplink.name, uplink.bridge, uplink.iface_type,
                                              uplink.options, ids, uplink.iface_external_ids)
    return state


def up_snapshot() -> snapshot.Snapshot:
    live = {name for name in HOST1.ports}
    return snapshot.take("contoso", "host1", up_switch(), UP_KERNEL, "br-int",
                         desired_flows(HOST1, live))


def test_a_snapshot_survives_its_file():
    snap = up_snapshot()
    again = snapshot.from_dict(json.loads(json.dumps(snapshot.to_dict(snap))))
    assert again == snap
    assert len(again.flows) > 10
    assert again.links["tep0"].routes == UP_KERNEL.links["tep0"].routes
    assert next(iter(again.links["eth1"].addresses), None) is None


def test_only_owned_rows_are_recorded():
    state = up_switch()
    state.bridges["br-foreign"] = ActualBridge("br-foreign", "netdev", (), None, {},
                                                        ("br-foreign",))
    snap = snapshot.take("contoso", "host1", state, UP_KERNEL, "br-int", set())
    assert "br-foreign" not in snap.bridges
    assert set(snap.bridges) == {"br0", "br-int"}


def test_restoring_the_state_it_holds_changes_nothing():
    snap = up_snapshot()
    assert snapshot.restore_rows(snap, up_switch()) == []
    assert snapshot.restore_kernel(snap, UP_KERNEL) == []
    assert not snapshot.restore_flows(snap, set(snap.flows))


def test_restoring_an_empty_switch_deletes_the_owned_bridges():
    snap = snapshot.take("contoso", "host1", EMPTY, FRESH_KERNEL, "br-int", set())
    changes = snapshot.restore_rows(snap, up_switch())
    assert sorted(c.name for c in changes if isinstance(c, BridgeDelete)) == ["br-int", "br0"]
    assert all(isinstance(c, BridgeDelete) for c in changes)


def test_restoring_a_removed_host_recreates_the_uplink_with_its_record():
    changes = snapshot.restore_rows(up_snapshot(), EMPTY)
    assert {c.spec.name for c in changes if isinstance(c, BridgeCreate)} == {"br0", "br-int"}
    uplink = next(c for c in changes if isinstance(c, PortCreate) and c.spec.name == "eth1")
    assert json.loads(uplink.extra_ids[SAVED_ADDRESSES_KEY]) == [str(PA)]
    assert SAVED_ADDRESSES_KEY not in uplink.spec.external_ids


def test_kernel_restore_moves_away_before_it_moves_back():
    snap = snapshot.take("contoso", "host1", EMPTY, FRESH_KERNEL, "br-int", set())
    now = ActualKernel({"eth1": link("eth1", up=False),
                       "tep0": link("tep0", [PA], [DEFAULT])})
    changes = snapshot.restore_kernel(snap, now)
    assert changes == [LinkUp("eth1"), AddressChange("add", "eth1", PA),
                       RouteChange("add", "eth1", DEFAULT)]
    # From the state before a `down`: the uplink gives up what the tep port gets back.
    back = snapshot.restore_kernel(up_snapshot(), ActualKernel({
        "eth1": link("eth1", [PA], [DEFAULT]), "tep0": link("tep0", up=False)}))
    kinds = [(type(c).__name__, getattr(c, "action", ""), c.link) for c in back]
    assert kinds[:3] == [("RouteChange", "delete", "eth1"), ("AddressChange", "delete", "eth1"),
                         ("LinkUp", "", "tep0")]
    assert kinds[3] == ("AddressChange", "add", "tep0")
    assert {k for k in kinds[4:]} == {("RouteChange", "add", "tep0")}
    assert LinkDown("x").describe() == "set link x down"


def test_up_probes_the_fabric_gateway_on_the_tep_port():
    plan = make_plan(HOST1, EMPTY, FRESH_KERNEL)
    assert touches_underlay(HOST1, plan)
    found = {t.address: t for t in targets(HOST1, plan, removing=False)}
    assert list(found) == [GATEWAY]
    gateway = found[GATEWAY]
    assert gateway.required and gateway.link_after == "tep0"
    assert "the fabric's gateway" in gateway.why and "default route" in gateway.why


def test_down_probes_what_goes_back_to_the_uplink_but_requires_nothing_new():
    plan = make_plan(HOST1, up_switch(), UP_KERNEL, removing=True)
    found = targets(HOST1, plan, removing=True)
    assert [(t.address, t.required, t.link_after) for t in found] == [(GATEWAY, False, "eth1")]


def test_probes_are_checked_wherever_the_kernel_routes_them():
    fab = fabric.loads(TWO_HOSTS.replace("tep_port: tep0", "tep_port: tep0, "
                                         "probe: [198.51.100.7, 203.0.113.1]"), "f.yaml")
    desired = desired_host(fab, "host1")
    plan = make_plan(desired, EMPTY, FRESH_KERNEL)
    probes = [t for t in targets(desired, plan, removing=False) if t.why == "underlay probe"]
    assert [str(t.address) for t in probes] == ["198.51.100.7", "203.0.113.1"]
    assert all(t.link_after is None and not t.required for t in probes)


def test_a_change_of_vm_ports_only_does_not_probe_the_underlay():
    plan = make_plan(HOST1, up_switch(), UP_KERNEL)
    assert plan.empty
    fewer = desired_host(fabric.loads("\n".join(
        line for line in TWO_HOSTS.splitlines() if "blue-a" not in line) + "\n", "f.yaml"),
        "host1")
    smaller = make_plan(fewer, up_switch(), UP_KERNEL)
    assert smaller.ovsdb and not smaller.kernel
    assert not touches_underlay(fewer, smaller)
    assert touches_underlay(HOST1, Plan("host1", kernel=(LinkUp("eth1"),)))


def test_arp_frames():
    ipv4 = family.IPV4
    mac = bytes.fromhex("020000000001")
    request = ipv4.solicit(mac, ipaddress.IPv4Address("198.51.100.11"), GATEWAY)
    assert len(request) == 42 and request[:6] == b"\xff" * 6
    assert ipv4.solicited_answer(request) is None  # a request is not an answer
    reply = bytearray(request)
    reply[20:22] = b"\x00\x02"
    reply[28:32] = GATEWAY.packed
    assert ipv4.solicited_answer(bytes(reply)) == GATEWAY
    assert ipv4.solicited_answer(b"\x00" * 20) is None


def test_gratuitous_arp_names_the_address_as_sender_and_target():
    mac = bytes.fromhex("020000000001")
    frame = family.IPV4.announcement(mac, PA.ip)
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == mac and frame[12:14] == b"\x08\x06"
    assert frame[22:28] == mac and frame[28:32] == PA.ip.packed == frame[38:42]


def test_echo_request_checksum_is_valid():
    packet = family.IPV4.echo_request(0x1234, 7)
    assert family._checksum(packet) == 0
    assert packet[0] == 8 and packet[4:8] == b"\x12\x34\x00\x07"
