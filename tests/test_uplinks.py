"""Uplinks shaped like real hosts' (issue 15), in namespaces with the userspace datapath:
what `up` takes over without a gap, what preflight refuses before any change, and the
automatic restore after a failure in the middle of the move."""

from __future__ import annotations

import json
import os
import signal

from ovsenv import Namespace, veth
from test_one_run import kill_at
from test_promises import capture, captured
from test_safe_apply import GATEWAY, assert_restored, host_state, rollback_file, start

GATEWAY6 = "2001:db8:51::1"   # IPv6 documentation prefix, inside the lab's namespaces only
ADDRESS6 = "2001:db8:51::11/64"


def refused(host, *expected: str) -> str:
    """`plan` lists the blocker and `up` refuses with it in one line, changing nothing."""
    before = host_state(host)
    plan = host.ovsnvgre("plan")
    assert plan.returncode == 0, plan.stderr
    assert any(all(e in line for e in expected) for line in plan.stdout.splitlines()
               if line.startswith("blocked: ")), plan.stdout
    assert "`up` would refuse before changing anything" in plan.stdout
    result = host.ovsnvgre("up")
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("ovsnvgre: error: host host1: ") and "nothing was changed" in line
    assert all(e in line for e in expected), line
    assert "Traceback" not in result.stderr
    assert_restored(host, before)
    assert not rollback_file(host).exists()
    return line


def link(host, name: str) -> dict:
    return json.loads(host.ip("-j", "addr", "show", name))[0]


def test_an_uplink_inside_a_foreign_ovs_bond_is_refused(lab, host1):
    far = Namespace("far")
    lab.namespaces.append(far)
    veth(host1.netns, "eth2", far, "eth0")
    host1.switch.vsctl("add-br", "br-phys", "--", "set", "bridge", "br-phys",
                       "datapath_type=netdev", "--", "add-bond", "br-phys", "bond0", "eth1",
                       "eth2")
    refused(host1, "the uplink eth1 is in bond port bond0 of OVS bridge br-phys")


def test_an_uplink_in_a_linux_bridge_is_refused(host1):
    host1.ip("link", "add", "brx", "type", "bridge")
    host1.ip("link", "set", "eth1", "master", "brx")
    refused(host1, "the uplink eth1 is enslaved to bridge brx")


def test_an_uplink_that_does_not_exist_is_named(host1, tmp_path):
    fabric = tmp_path / "nosuch.yaml"
    fabric.write_text(host1.fabric.read_text().replace("uplink: eth1", "uplink: nosuch0", 1))
    host1.fabric = fabric
    refused(host1, "the uplink nosuch0 (hosts.host1.uplink) does not exist on this machine")


def test_a_leased_address_is_refused_not_made_static(host1):
    host1.ip("addr", "replace", "198.51.100.11/24", "dev", "eth1", "valid_lft", "3600",
             "preferred_lft", "3600")
    host1.ip("route", "replace", "default", "via", GATEWAY, "proto", "dhcp")
    refused(host1, "address 198.51.100.11/24 is leased (DHCP or SLAAC)")


def test_the_pa_on_another_link_is_refused(lab, host1):
    far = Namespace("far")
    lab.namespaces.append(far)
    veth(host1.netns, "eth3", far, "eth0")
    host1.ip("addr", "add", "198.51.100.11/32", "dev", "eth3")
    refused(host1, "the PA 198.51.100.11 is already configured on eth3")


def test_a_macvlan_on_the_uplink_is_named_and_stays(host1):
    host1.ip("link", "add", "mv0", "link", "eth1", "type", "macvlan")
    plan = host1.ovsnvgre("plan")
    assert "note: the uplink eth1 is the parent of macvlan mv0" in plan.stdout
    assert host1.ovsnvgre("up").returncode == 0
    assert host1.ping(GATEWAY)
    assert "mv0" in host1.ip("link", "show", "mv0")


def dual_stack(lab, host, default_disabled: bool) -> None:
    """IPv6 beside the PA on the uplink, a gateway for it on the router; optionally the
    common hardening that disables IPv6 on every new link."""
    lab.router.exec("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
    lab.router.exec("ip", "addr", "add", f"{GATEWAY6}/64", "dev", "r-host1", "nodad")
    host.ip("addr", "add", ADDRESS6, "dev", "eth1", "nodad")
    host.ip("-6", "route", "add", "default", "via", GATEWAY6, "dev", "eth1")
    if default_disabled:
        host.netns.exec("sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")


def ping6_within(host, seconds: float) -> bool:
    """Whether the IPv6 gateway answers within ``seconds`` (one echo every 0.1 s)."""
    result = host.netns.exec("ping", "-6", "-c", "1", "-w", str(seconds), "-i", "0.1",
                             GATEWAY6, check=False)
    return result.returncode == 0


def test_dual_stack_moves_both_families_without_a_gap(lab, host1):
    dual_stack(lab, host1, default_disabled=True)
    uplink_mac = link(host1, "eth1")["address"]
    assert host1.ping(GATEWAY) and ping6_within(host1, 2)
    sniffer = capture(lab, "r-host1")
    try:
        result = host1.ovsnvgre("up")
    finally:
        seen = captured(sniffer)
    assert result.returncode == 0, result.stderr
    assert f"neighbor advertisement, tgt is {ADDRESS6.split('/')[0]}" in seen, seen
    tep = link(host1, "tep0")
    assert tep["address"] == uplink_mac
    addresses = {f"{a['local']}/{a['prefixlen']}" for a in tep["addr_info"]
                 if a["scope"] == "global"}
    assert addresses == {"198.51.100.11/24", ADDRESS6}
    assert ping6_within(host1, 1) and host1.ping(GATEWAY)
    # The router's neighbour entry for the moved address still holds the same MAC.
    neighbours = lab.router.exec("ip", "-6", "neigh", "show", ADDRESS6.split("/")[0]).stdout
    assert uplink_mac in neighbours or not neighbours.strip()
    sniffer = capture(lab, "r-host1")
    try:
        down = host1.ovsnvgre("down")
    finally:
        seen = captured(sniffer)
    assert down.returncode == 0, down.stderr
    assert f"neighbor advertisement, tgt is {ADDRESS6.split('/')[0]}" in seen, seen
    back = {f"{a['local']}/{a['prefixlen']}" for a in link(host1, "eth1")["addr_info"]
            if a["scope"] == "global"}
    assert back == {"198.51.100.11/24", ADDRESS6}
    assert ping6_within(host1, 1) and host1.ping(GATEWAY)


def test_sigterm_in_the_middle_of_the_move_puts_the_host_back(host1):
    before = host_state(host1)
    for marker in ("address, route and link changes", "flow changes in one bundle"):
        run = start(host1, "up")
        try:
            assert run.stderr is not None
            for line in run.stderr:
                if marker in line:
                    run.send_signal(signal.SIGTERM)
                    break
            rest = run.stderr.read()
            run.wait(timeout=60)
        finally:
            run.kill()
        assert run.returncode == 1, rest
        last = rest.strip().splitlines()[-1]
        assert "interrupted by SIGTERM" in last and "Rolled back: the host is as it was" \
            in last, last
        assert_restored(host1, before)
        assert not rollback_file(host1).exists()
        assert host1.ping(GATEWAY)


def test_an_onlink_route_moves_and_comes_back_with_its_flag(host1):
    # A gateway outside every subnet of the uplink: the kernel takes such a route only
    # with `onlink`, on the tep port as on the NIC.
    host1.ip("route", "add", "10.99.0.0/16", "via", "192.0.2.1", "dev", "eth1", "onlink")
    before = host_state(host1)
    result = host1.ovsnvgre("up", "--no-verify")
    assert result.returncode == 0, result.stderr
    assert "10.99.0.0/16 via 192.0.2.1 dev tep0" in host1.ip("route", "show", "10.99.0.0/16")
    assert "onlink" in host1.ip("route", "show", "10.99.0.0/16")
    assert host1.ovsnvgre("down", "--no-verify").returncode == 0
    assert_restored(host1, before)


def test_a_switch_that_stops_answering_mid_run_is_reported_with_what_is_left(host1):
    """ovs-vswitchd stopped after preflight: the OVSDB write times out, and so does the
    restore; the line says so and what is kept, and the next `up` takes it over."""
    before = host_state(host1)
    vswitchd = int((host1.switch.rundir / "ovs-vswitchd.pid").read_text())
    os.kill(vswitchd, signal.SIGSTOP)
    try:
        result = host1.ovsnvgre("up", "--timeout", "2")
    finally:
        os.kill(vswitchd, signal.SIGCONT)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "ovs-vswitchd did not apply the change within 2 s" in last, last
    assert "the next `ovsnvgre up` takes it over" in last
    assert rollback_file(host1).exists()
    taken_over = host1.ovsnvgre("up")
    assert taken_over.returncode == 0, taken_over.stderr
    assert not rollback_file(host1).exists()
    assert host1.ovsnvgre("down").returncode == 0
    assert_restored(host1, before)


def test_killed_runs_still_leave_the_state_for_the_next_up(host1):
    """A kill -9 cannot be caught: that is what the next run's take-over is for."""
    assert kill_at(host1, "address, route and link changes")
    assert host1.ovsnvgre("up").returncode == 0
    assert host1.ping(GATEWAY)


def test_what_others_put_on_the_tep_port_survives_up(host1, tmp_path):
    assert host1.ovsnvgre("up").returncode == 0
    # A routing daemon's route and a keepalived address on the tep port.
    host1.ip("route", "add", "10.77.0.0/16", "via", GATEWAY, "dev", "tep0", "proto", "bird")
    host1.ip("addr", "add", "198.51.100.200/32", "dev", "tep0")
    # A fabric change that takes away a route ovsnvgre put there (the peer route).
    fabric = tmp_path / "no-peer-route.yaml"
    fabric.write_text(host1.fabric.read_text().replace(
        "host2: {pa: 203.0.113.11/24, uplink: eth1, gateway: 203.0.113.1}",
        "host2: {pa: 198.51.100.12/24, uplink: eth1, gateway: 198.51.100.1}"))
    result = host1.ovsnvgre("up", "--no-verify", fabric=fabric)
    assert result.returncode == 0, result.stderr
    routes = host1.ip("route", "show", "dev", "tep0")
    assert "10.77.0.0/16 via 198.51.100.1 proto bird" in routes
    assert "203.0.113.0/24" not in routes  # ovsnvgre's own, no longer wanted: removed
    assert "198.51.100.200/32" in host1.ip("addr", "show", "tep0")
    assert "no changes" in host1.ovsnvgre("up", "--no-verify", fabric=fabric).stdout


def test_status_warns_when_a_leased_address_comes_back_on_the_uplink(host1):
    assert host1.ovsnvgre("up").returncode == 0
    # A DHCP client that renews its lease on the NIC after `up` took the PA over.
    host1.ip("addr", "add", "198.51.100.11/24", "dev", "eth1", "valid_lft", "600",
             "preferred_lft", "600")
    report = json.loads(host1.ovsnvgre("status", "--json").stdout)
    assert any(w.startswith("the uplink eth1 holds a leased address again "
                            "(198.51.100.11/24)") for w in report["warnings"]), report


def test_the_loopback_as_uplink_is_refused_before_any_change(host1, tmp_path):
    """Found by a fresh rebuild of issue 15's case 5: an uplink that exists but cannot
    carry the PA (here with the PA on no link at all) was changed, then rolled back."""
    host1.ip("addr", "del", "198.51.100.11/24", "dev", "eth1")
    fabric = tmp_path / "lo.yaml"
    fabric.write_text(host1.fabric.read_text().replace("uplink: eth1", "uplink: lo", 1))
    host1.fabric = fabric
    refused(host1, "the uplink lo (hosts.host1.uplink) is the loopback device")
