"""`ovsnvgre status` on real switches: tunnels, VMs, flows, drift, BFD and MTU."""

from __future__ import annotations

import json

from fabrics import ROUTED, TWO_HOSTS
from ovsenv import sh, wait_for

RED_TUNNEL = "gcb00710b001389"
DRIFTED = 3


def status(host, *args: str) -> tuple[int, dict]:
    result = host.ovsnvgre("status", "--json", *args)
    assert result.returncode in (0, DRIFTED), result.stderr
    return result.returncode, json.loads(result.stdout)


def test_a_converged_host_reports_its_parts_and_exits_0(host1):
    assert host1.ovsnvgre("up").returncode == 0
    code, report = status(host1)
    assert code == 0 and report["converged"] and report["drift"] == []
    assert report["host"]["pa_on"] == "tep0"
    assert report["host"]["underlay_mtu"] == 1500
    red = next(t for t in report["tunnels"] if t["port"] == RED_TUNNEL)
    assert red == {**red, "peer": "host2", "remote_ip": "203.0.113.11", "vsid": 5001,
                   "key": "0x138900", "bfd": None}
    assert isinstance(red["ofport"], int)
    vms = {vm["name"]: vm for vm in report["vms"]}
    assert set(vms) == {"red-a", "blue-a"}
    assert vms["red-a"]["port"] == "vnet0" and vms["red-a"]["vsid"] == 5001
    assert vms["red-a"]["ca"] == "10.0.0.1/24" and isinstance(vms["red-a"]["ofport"], int)
    assert report["flows"]["classify"] > 0 and report["flows"]["forward"] > 0
    text = host1.ovsnvgre("status")
    assert text.returncode == 0
    assert "converged: the switch matches the fabric" in text.stdout
    assert RED_TUNNEL in text.stdout and "0x138900" in text.stdout


def test_drift_is_listed_and_exits_3_until_up_repairs_it(host1):
    assert host1.ovsnvgre("up").returncode == 0
    host1.switch.vsctl("del-port", "br-int", RED_TUNNEL)
    sh("ovs-ofctl", "-O", "OpenFlow13", "del-flows", "br-int",
       "cookie=0x6f76736e76677265/-1,table=10", env=host1.switch.env)
    code, report = status(host1)
    assert code == DRIFTED and not report["converged"]
    assert any(line.startswith(f"add tunnel port {RED_TUNNEL}") for line in report["drift"])
    assert any("arp_responder" in line for line in report["drift"])
    missing = next(t for t in report["tunnels"] if t["port"] == RED_TUNNEL)
    assert missing["state"] == "missing"
    text = host1.ovsnvgre("status")
    assert text.returncode == DRIFTED and "drifted" in text.stdout
    assert host1.ovsnvgre("up").returncode == 0
    assert status(host1)[0] == 0


def test_an_uninitialised_host_is_drifted(host1):
    code, report = status(host1)
    assert code == DRIFTED
    assert report["host"]["pa_on"] == "eth1"
    assert all(t["state"] == "missing" for t in report["tunnels"])


def test_bfd_shows_a_peer_going_down_and_coming_back(lab):
    lab.fabric.write_text(TWO_HOSTS.replace("tunnel_ports: per-vsid",
                                            "tunnel_ports: per-peer, bfd: true"))
    host1 = lab.host("host1", "198.51.100.11/24", "198.51.100.1")
    host2 = lab.host("host2", "203.0.113.11/24", "203.0.113.1")
    for host in (host1, host2):
        assert host.ovsnvgre("up").returncode == 0
    assert host1.switch.vsctl("get", "interface", "gre-cb00710b", "bfd").strip() == \
        '{enable="true"}'

    def bfd_state(host):
        return status(host)[1]["tunnels"][0]["bfd"]

    wait_for(lambda: bfd_state(host1)["state"] == "up", 20, what="BFD up")
    assert "up (flaps" in host1.ovsnvgre("status").stdout
    # Cut host2 off the underlay: host1 sees its peer go down ...
    lab.router.exec("ip", "link", "set", "r-host2", "down")
    wait_for(lambda: bfd_state(host1)["state"] == "down", 20, what="BFD down")
    # ... and come back when the link does.
    lab.router.exec("ip", "link", "set", "r-host2", "up")
    back = wait_for(lambda: (state := bfd_state(host1))["state"] == "up" and state,
                    20, what="BFD up again")
    assert back["flaps"] >= 1


def test_mtu_warning_is_the_case_where_big_frames_are_lost(lab, tmp_path):
    host1 = lab.host("host1", "198.51.100.11/24", "198.51.100.1")
    host2 = lab.host("host2", "203.0.113.11/24", "203.0.113.1")
    red_a = lab.vm(host1, "vnet0", "02:00:00:00:50:01", "10.0.0.1/24", mtu=1500)
    lab.vm(host2, "vnet0", "02:00:00:00:50:02", "10.0.0.2/24", mtu=1500)
    for host in (host1, host2):
        assert host.ovsnvgre("up").returncode == 0
    report = status(host1)[1]
    assert any("VM port vnet0 (red-a) has MTU 1500" in w and "1458" in w
               for w in report["warnings"])
    assert "warning: VM port vnet0" in host1.ovsnvgre("status").stdout
    # The warning is true: a 1459-byte IP packet does not cross, a 1458-byte one does.
    assert red_a.ping("10.0.0.2", count=2)

    def ping_df(size: int) -> bool:
        return red_a.netns.exec("ping", "-c", "2", "-W", "2", "-i", "0.2", "-M", "do", "-s",
                                str(size), "10.0.0.2", check=False).returncode == 0

    assert ping_df(1458 - 28)
    assert not ping_df(1459 - 28)
    # overlay.vm_mtu puts the fitting MTU on the VM ports, and the warning goes.
    fitted = tmp_path / "fitted.yaml"
    fitted.write_text(TWO_HOSTS.replace("tunnel_ports: per-vsid",
                                        "tunnel_ports: per-vsid, vm_mtu: 1458"))
    result = host1.ovsnvgre("up", fabric=fitted)
    assert result.returncode == 0, result.stderr
    assert "mtu_request" in result.stdout
    assert host1.switch.vsctl("get", "interface", "vnet0", "mtu_request").strip() == "1458"
    report = json.loads(host1.ovsnvgre("status", "--json", fabric=fitted).stdout)
    vm = next(v for v in report["vms"] if v["name"] == "red-a")
    assert vm["mtu"] == 1458
    assert not [w for w in report["warnings"] if "vnet0" in w]


def test_flow_mode_shows_the_peers_from_the_flows(host1, tmp_path):
    """One GRE port serves every peer: status reads the peers and their VSIDs from the
    installed flows (classify by tun_src, forward by tun_dst), not from ports."""
    flow = tmp_path / "flow.yaml"
    flow.write_text(TWO_HOSTS.replace("tunnel_ports: per-vsid", "tunnel_ports: flow"))
    assert host1.ovsnvgre("up", fabric=flow).returncode == 0
    result = host1.ovsnvgre("status", "--json", fabric=flow)
    assert result.returncode == 0, result.stdout + result.stderr
    tunnels = json.loads(result.stdout)["tunnels"]
    ofport = tunnels[0]["ofport"]
    assert isinstance(ofport, int)
    assert tunnels == [
        {"port": "gre-flow", "peer": "host2", "remote_ip": "203.0.113.11", "vsid": vsid,
         "key": f"{vsid << 8:#x}", "flow_id": "zero", "ofport": ofport, "state": "up", "bfd": None}
        for vsid in (5001, 6001)]
    # Without the flows that send to host2 in Blue, the row says what is left.
    sh("ovs-ofctl", "-O", "OpenFlow13", "del-flows", "br-int",
       "cookie=0x6f76736e76677265/-1,table=20,reg0=0x1771", env=host1.switch.env)
    result = host1.ovsnvgre("status", "--json", fabric=flow)
    assert result.returncode == DRIFTED
    blue = next(t for t in json.loads(result.stdout)["tunnels"] if t["vsid"] == 6001)
    assert blue["state"] == "up (send flows missing)"
    # Without any of its flows, each tunnel the fabric wants says what it lacks.
    sh("ovs-ofctl", "-O", "OpenFlow13", "del-flows", "br-int",
       "cookie=0x6f76736e76677265/-1", env=host1.switch.env)
    tunnels = json.loads(host1.ovsnvgre("status", "--json", fabric=flow).stdout)["tunnels"]
    assert [(t["peer"], t["vsid"], t["state"]) for t in tunnels] == [
        ("host2", vsid, "up (receive flows missing, send flows missing)")
        for vsid in (5001, 6001)]
    text = host1.ovsnvgre("status", fabric=flow).stdout
    assert "gre-flow" in text and "drifted" in text


def test_flow_mode_with_routing_domains_is_converged_with_one_way_tunnels(host1, tmp_path):
    """A routed VSID is often sent in one direction only (host1 routes into app, where it
    has no VM, and receives nothing in it): that is the fabric, not drift."""
    routed = tmp_path / "routed.yaml"
    routed.write_text(ROUTED.replace("tunnel_ports: per-vsid", "tunnel_ports: flow"))
    for index, port in ((2, "vnet2"), (3, "vnet3")):  # the fixture made vnet0 and vnet1
        host1.netns.exec("ip", "link", "add", port, "type", "veth", "peer", "name", f"vm{index}")
        host1.netns.exec("ip", "link", "set", port, "up")
    assert host1.ovsnvgre("up", fabric=routed).returncode == 0
    result = host1.ovsnvgre("status", "--json", fabric=routed)
    assert result.returncode == 0, result.stdout + result.stderr
    tunnels = json.loads(result.stdout)["tunnels"]
    assert {t["vsid"] for t in tunnels} >= {5001, 5002, 5003}
    assert all(t["state"] == "up" for t in tunnels), tunnels
