"""`ovsnvgre` against a real ovsdb-server + ovs-vswitchd (userspace datapath) in a namespace."""

from __future__ import annotations

import json
import re
import sys
import time

from fabrics import TWO_HOSTS
from ovsenv import sh

from ovsnvgre.changes import BridgeCreate, PortCreate, PortDelete, PortUpdate
from ovsnvgre.desired import desired_host
from ovsnvgre.fabric import load
from ovsnvgre.ovsdb import Switch

PA = "198.51.100.11/24"
GATEWAY = "198.51.100.1"
RED_TUNNEL = "gcb00710b001389"   # to host2 (203.0.113.11), VSID 5001
BLUE_TUNNEL = "gcb00710b001771"  # to host2, VSID 6001
RECEIVE = "gre-cb00710b"         # from host2, every FlowID (in_key=flow)


def rows(host, table: str) -> dict[str, dict]:
    """name -> columns of every row of a table, _uuid and _version included."""
    columns = ["_uuid", "_version", "name", "external_ids"]
    if table == "Interface":
        columns += ["type", "options"]
    query = ["Open_vSwitch", {"op": "select", "table": table, "where": [],
                              "columns": columns}]
    out = sh("ovsdb-client", "transact", host.switch.db, json.dumps(query)).stdout
    return {row["name"]: row for row in json.loads(out)[0]["rows"]}


def ovs_map(value) -> dict[str, str]:
    assert value[0] == "map"
    return dict(value[1])


def snapshot(host) -> tuple:
    # IPv6 link-local addresses finish duplicate address detection (and get their
    # local route) on the kernel's own timing: not something a run changes.
    addresses = host.ip("-d", "addr", "show").replace(" tentative", "")
    routes = "\n".join(line for line in host.ip("route", "show", "table", "all").splitlines()
                       if not line.startswith(("fe80:", "local fe80:")))
    return (rows(host, "Bridge"), rows(host, "Port"), rows(host, "Interface"), addresses,
            routes)


def test_up_builds_the_host_and_keeps_it_reachable(host1):
    assert host1.ping(GATEWAY)
    result = host1.ovsnvgre("up")
    assert result.returncode == 0, result.stderr
    assert "changes applied" in result.stdout
    sw = host1.switch
    assert sw.vsctl("get", "bridge", "br0", "datapath_type").strip() == "netdev"
    assert sw.vsctl("get", "bridge", "br-int", "fail_mode").strip() == "secure"
    assert "OpenFlow13" in sw.vsctl("get", "bridge", "br-int", "protocols")
    assert set(sw.vsctl("list-ports", "br0").split()) == {"eth1", "tep0"}
    assert set(sw.vsctl("list-ports", "br-int").split()) == {"vnet0", "vnet1", RED_TUNNEL,
                                                           BLUE_TUNNEL, RECEIVE}
    ifaces = rows(host1, "Interface")
    assert ifaces["tep0"]["type"] == "internal"
    red = ovs_map(ifaces[RED_TUNNEL]["options"])
    assert ifaces[RED_TUNNEL]["type"] == "gre"
    assert red == {"remote_ip": "203.0.113.11", "local_ip": "198.51.100.11", "csum": "false",
                   "key": str(5001 << 8)}
    assert ovs_map(ifaces[BLUE_TUNNEL]["options"])["key"] == str(6001 << 8)
    ports = rows(host1, "Port")
    for name in ("tep0", "eth1", "vnet0", RED_TUNNEL):
        assert ovs_map(ports[name]["external_ids"])["ovsnvgre-fabric"] == "contoso"
    assert ovs_map(ports[RED_TUNNEL]["external_ids"])["ovsnvgre-peer"] == "host2"
    # The PA and the default route moved from the uplink to the tep port ...
    assert "198.51.100.11/24" in host1.ip("addr", "show", "tep0")
    assert "inet " not in host1.ip("addr", "show", "eth1")
    assert f"default via {GATEWAY} dev tep0" in host1.ip("route")
    assert f"203.0.113.0/24 via {GATEWAY} dev tep0" in host1.ip("route")
    # ... and the host still reaches its gateway through the underlay bridge.
    assert host1.ping(GATEWAY, count=2)


def test_second_up_writes_nothing(host1):
    assert host1.ovsnvgre("up").returncode == 0
    before = snapshot(host1)
    again = host1.ovsnvgre("up")
    assert again.returncode == 0, again.stderr
    assert "no changes" in again.stdout
    assert "applying" not in again.stderr
    # Every row keeps its _uuid and _version: no OVSDB write at all.
    assert snapshot(host1) == before
    plan = host1.ovsnvgre("plan")
    assert plan.returncode == 0 and "no changes" in plan.stdout
    data = json.loads(host1.ovsnvgre("up", "--json").stdout)
    assert data["changed"] is False and data["ovsdb_writes"] == 0
    assert data["kernel_changes"] == 0


def test_plan_changes_nothing(host1):
    before = snapshot(host1)
    result = host1.ovsnvgre("plan")
    assert result.returncode == 0, result.stderr
    assert "+ create bridge br0" in result.stdout
    assert f"+ add tunnel port {RED_TUNNEL} to br-int" in result.stdout
    assert "+ delete address 198.51.100.11/24 from eth1" in result.stdout
    assert snapshot(host1) == before


def test_drift_is_shown_and_repaired(host1, tmp_path):
    assert host1.ovsnvgre("up").returncode == 0
    sw = host1.switch
    sw.vsctl("set", "interface", RED_TUNNEL, "options:key=99", "options:ttl=5")
    sw.vsctl("del-port", "br-int", BLUE_TUNNEL)
    plan = host1.ovsnvgre("plan")
    assert f"repair tunnel port {RED_TUNNEL}" in plan.stdout
    assert f"add tunnel port {BLUE_TUNNEL}" in plan.stdout
    assert host1.ovsnvgre("up").returncode == 0
    ifaces = rows(host1, "Interface")
    assert ovs_map(ifaces[RED_TUNNEL]["options"]) == {
        "remote_ip": "203.0.113.11", "local_ip": "198.51.100.11", "csum": "false",
        "key": str(5001 << 8)}  # the stray ttl key is gone too
    assert BLUE_TUNNEL in ifaces
    # A VM that leaves the fabric loses its port; the blue tunnel goes with its last VM.
    smaller = tmp_path / "smaller.yaml"
    smaller.write_text("\n".join(line for line in TWO_HOSTS.splitlines()
                                 if not line.startswith("  blue-a:")) + "\n")
    result = host1.ovsnvgre("up", fabric=smaller)
    assert result.returncode == 0, result.stderr
    assert "remove vm port vnet1" in result.stdout
    assert set(sw.vsctl("list-ports", "br-int").split()) == {"vnet0", RED_TUNNEL, RECEIVE}


def test_down_removes_exactly_what_it_made(host1):
    sw = host1.switch
    sw.vsctl("add-br", "br-foreign", "--", "set", "bridge", "br-foreign", "datapath_type=netdev")
    sw.vsctl("add-port", "br-foreign", "f0", "--", "set", "interface", "f0", "type=internal")
    assert host1.ovsnvgre("up").returncode == 0
    sw.vsctl("br-set-external-id", "br0", "monitoring", "yes")
    assert "no changes" in host1.ovsnvgre("up").stdout  # a foreign key is not drift
    sw.vsctl("add-port", "br-int", "foreign1", "--", "set", "interface", "foreign1",
             "type=internal")
    result = host1.ovsnvgre("down")
    assert result.returncode == 0, result.stderr
    assert "kept bridge br-int" in result.stdout and "foreign1" in result.stdout
    assert set(sw.vsctl("list-br").split()) == {"br-foreign", "br-int"}
    assert sw.vsctl("list-ports", "br-int").split() == ["foreign1"]
    assert sw.vsctl("list-ports", "br-foreign").split() == ["f0"]
    # The uplink has its address and its default route back, and still works.
    assert "198.51.100.11/24" in host1.ip("addr", "show", "eth1")
    assert f"default via {GATEWAY} dev eth1" in host1.ip("route", "show", "proto", "boot")
    assert host1.ping(GATEWAY)
    again = host1.ovsnvgre("down")
    assert again.returncode == 0 and "no changes" in again.stdout


def test_up_after_down_converges_again(host1):
    assert host1.ovsnvgre("up").returncode == 0
    assert host1.ovsnvgre("down").returncode == 0
    assert host1.ovsnvgre("up").returncode == 0
    assert "no changes" in host1.ovsnvgre("up").stdout
    assert host1.ping(GATEWAY)


def test_a_bridge_it_did_not_create_is_refused_and_nothing_changes(host1):
    host1.switch.vsctl("add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev")
    before = snapshot(host1)
    result = host1.ovsnvgre("up")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("ovsnvgre: error: bridge br0 "
                                                             "already exists")
    assert "Traceback" not in result.stderr
    assert snapshot(host1) == before


def test_refused_port_is_reported_with_the_reason(lab):
    host = lab.host("host1", PA, GATEWAY, vm_ports=("vnet0",))  # vnet1 does not exist
    result = host.ovsnvgre("up")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "refused 1 port(s): vnet1" in last and "No such device" in last, last
    # Everything else was applied.
    assert "tep0" in host.switch.vsctl("list-ports", "br0")


def test_bad_fabric_exits_2_and_changes_nothing(host1, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TWO_HOSTS.replace("vsid: 5001", "vsid: 12"))
    before = snapshot(host1)
    result = host1.ovsnvgre("up", fabric=bad)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"ovsnvgre: error: {bad}:9: virtual_subnets.red.vsid: 12 "
                                     "is outside 4096-16777214 (RFC 7637 reserves 0-4095 and "
                                     "16777215)")
    assert snapshot(host1) == before


def test_host_is_found_from_its_pa(host1):
    result = host1.ovsnvgre("plan", host=None)
    assert result.returncode == 0, result.stderr
    assert "host host1:" in result.stdout


def test_no_matching_host_asks_for_one(lab):
    host = lab.host("host1", "192.0.2.200/24", "192.0.2.1", vm_ports=())
    result = host.ovsnvgre("plan", host=None)
    assert result.returncode == 2
    assert "pick one with --host (host1, host2)" in result.stderr


def test_unknown_host_is_a_usage_error(host1):
    result = host1.ovsnvgre("up", host="host9")
    assert result.returncode == 2
    assert "no host 'host9' in the fabric" in result.stderr


def test_unreachable_database_fails_fast_with_one_line(host1, tmp_path):
    for remote in (f"unix:{tmp_path}/nothing.sock", "tcp:127.0.0.1:1"):
        result = host1.switch.ovsnvgre("up", "-c", str(host1.fabric), "--host", "host1",
                                       "--db", remote)
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith(f"ovsnvgre: error: cannot reach ovsdb-server at {remote}")
        assert "Traceback" not in result.stderr


def test_ovs_rundir_selects_the_switch(host1, tmp_path):
    """With no --db the database is unix:$OVS_RUNDIR/db.sock, as for the OVS tools."""
    env = {**host1.switch.env, "OVS_RUNDIR": str(tmp_path)}
    result = host1.netns.exec(sys.executable, "-m", "ovsnvgre", "plan", "-c", str(host1.fabric),
                              "--host", "host1", env=env, check=False)
    assert result.returncode == 1
    assert f"unix:{tmp_path}/db.sock" in result.stderr
    assert host1.ovsnvgre("plan").returncode == 0


def test_a_stopped_vswitchd_is_reported_not_waited_for(host1):
    host1.switch.stop_vswitchd()
    result = host1.switch.ovsnvgre("up", "-c", str(host1.fabric), "--host", "host1",
                                   "--timeout", "2")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ovsnvgre: error: host host1: ovs-vswitchd did not apply the "
                           "change within 2 s")
    # A restore needs ovs-vswitchd too: it is not tried, and the line says what is kept.
    assert "the state before the run was not restored (ovs-vswitchd applies nothing)" in last
    assert "the next `ovsnvgre up` takes it over, `ovsnvgre rollback` restores it" in last
    assert "Traceback" not in result.stderr
    # With ovs-vswitchd back, the half-done run can be undone, and `up` run afresh.
    host1.switch.start_vswitchd()
    assert host1.switch.ovsnvgre("rollback").returncode == 0
    assert host1.switch.vsctl("list-br").split() == []
    assert host1.ovsnvgre("up").returncode == 0
    assert "no changes" in host1.ovsnvgre("up").stdout


def test_switching_tunnel_mode_converges(host1, tmp_path):
    assert host1.ovsnvgre("up").returncode == 0
    per_peer = tmp_path / "per-peer.yaml"
    per_peer.write_text(TWO_HOSTS.replace("tunnel_ports: per-vsid", "tunnel_ports: per-peer"))
    result = host1.ovsnvgre("up", fabric=per_peer)
    assert result.returncode == 0, result.stderr
    assert set(host1.switch.vsctl("list-ports", "br-int").split()) == {"vnet0", "vnet1",
                                                                     "gre-cb00710b"}
    options = ovs_map(rows(host1, "Interface")["gre-cb00710b"]["options"])
    assert options["key"] == "flow" and options["remote_ip"] == "203.0.113.11"
    assert "no changes" in host1.ovsnvgre("up", fabric=per_peer).stdout


def test_switching_between_every_tunnel_mode_converges(host1, tmp_path):
    """per-vsid -> flow -> per-peer -> flow -> per-vsid on a running switch: each `up`
    removes the old mode's ports and adds the new ones in one run, ovs-vswitchd opens
    every port, and a second `up` changes nothing."""
    ports_of = {
        "per-vsid": {RED_TUNNEL, BLUE_TUNNEL, RECEIVE},
        "per-peer": {"gre-cb00710b"},
        "flow": {"gre-flow"},
    }
    for mode in ("per-vsid", "flow", "per-peer", "flow", "per-vsid"):
        path = tmp_path / f"{mode}.yaml"
        path.write_text(TWO_HOSTS.replace("tunnel_ports: per-vsid", f"tunnel_ports: {mode}"))
        result = host1.ovsnvgre("up", fabric=path)
        assert result.returncode == 0, f"{mode}: {result.stderr}"
        assert set(host1.switch.vsctl("list-ports", "br-int").split()) == \
            {"vnet0", "vnet1"} | ports_of[mode], mode
        for port in ports_of[mode]:
            assert int(host1.switch.vsctl("get", "interface", port, "ofport")) > 0, port
        again = host1.ovsnvgre("up", fabric=path)
        assert "no changes" in again.stdout, f"{mode}: {again.stdout}"
        flows = "\n".join(owned_flows(host1))
        assert ("set_field:203.0.113.11->tun_dst" in flows) == (mode == "flow"), mode
        if mode == "flow":
            interface = rows(host1, "Interface")["gre-flow"]
            assert interface["type"] == "gre"
            assert ovs_map(interface["options"]) == {
                "remote_ip": "flow", "key": "flow", "local_ip": "198.51.100.11",
                "csum": "false"}
    options = ovs_map(rows(host1, "Interface")[RED_TUNNEL]["options"])
    assert options["key"] == str(5001 << 8)


def test_a_vm_port_the_hypervisor_attached_is_left_alone(host1):
    assert host1.ovsnvgre("up").returncode == 0
    sw = host1.switch
    sw.vsctl("del-port", "br-int", "vnet0")
    sw.vsctl("add-port", "br-int", "vnet0", "--", "set", "interface", "vnet0",
             "external_ids:iface-id=vm-red-a")
    before = rows(host1, "Port")["vnet0"]
    result = host1.ovsnvgre("up")
    assert result.returncode == 0
    # Only the flows follow the port's new OpenFlow number; its row is untouched.
    assert "vnet0" not in result.stdout
    assert rows(host1, "Port")["vnet0"] == before
    assert "no changes" in host1.ovsnvgre("up").stdout
    result = host1.ovsnvgre("down")
    assert result.returncode == 0
    assert "kept bridge br-int" in result.stdout
    assert sw.vsctl("list-ports", "br-int").split() == ["vnet0"]


def owned_flows(host) -> list[str]:
    return host.netns.exec("ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-int",
                           env=host.switch.env).stdout.splitlines()[1:]


def test_flows_are_owned_by_cookie_and_left_alone_when_converged(host1):
    assert host1.ovsnvgre("up").returncode == 0
    env = host1.switch.env
    host1.netns.exec("ovs-ofctl", "-O", "OpenFlow13", "add-flow", "br-int",
                     "cookie=0x1234,table=50,priority=7,actions=drop", env=env)
    time.sleep(1.2)
    again = host1.ovsnvgre("up")
    assert "no changes" in again.stdout
    ours = [line for line in owned_flows(host1) if "cookie=0x6f76736e76677265" in line]
    assert len(ours) > 20
    # No flow-mod was sent: every flow has lived since the first run.
    durations = [float(re.search(r"duration=([\d.]+)s", line).group(1)) for line in ours]
    assert min(durations) >= 1.0
    assert any("cookie=0x1234" in line for line in owned_flows(host1))
    # A flow deleted by hand is drift: plan shows it, up puts it back.
    host1.netns.exec("ovs-ofctl", "-O", "OpenFlow13", "del-flows", "br-int",
                     "table=20,reg0=0x1389,reg1=0/0xffffffff,dl_dst=02:00:00:00:50:02", env=env)
    assert "flows in table forward of br-int: +1 -0" in host1.ovsnvgre("plan").stdout
    assert host1.ovsnvgre("up").returncode == 0
    assert "no changes" in host1.ovsnvgre("plan").stdout


def test_down_removes_every_owned_flow_and_no_other(host1):
    assert host1.ovsnvgre("up").returncode == 0
    env = host1.switch.env
    host1.switch.vsctl("add-port", "br-int", "foreign1", "--", "set", "interface", "foreign1",
                       "type=internal")
    host1.netns.exec("ovs-ofctl", "-O", "OpenFlow13", "add-flow", "br-int",
                     "cookie=0x1234,table=50,priority=7,actions=drop", env=env)
    assert host1.ovsnvgre("down").returncode == 0
    remaining = owned_flows(host1)
    assert len(remaining) == 1 and "cookie=0x1234" in remaining[0]


def test_one_switch_can_change_rows_it_created_itself(host1):
    """The writing IDL holds only the ports a transaction changes in place; a second
    transaction on the same connection (a rollback does that) must still find the
    ports the first one created."""
    desired = desired_host(load(host1.fabric), "host1")
    bridge = desired.bridges["br-int"]
    port = desired.ports["vnet0"]
    with Switch(host1.switch.db) as switch:
        assert switch.apply([BridgeCreate(bridge), PortCreate(port)]) == 2
        assert switch.read().bridges["br-int"].ports == ("br-int", "vnet0")
        assert switch.apply([PortDelete("vnet0", "br-int", "vm")]) == 1
        assert switch.read().bridges["br-int"].ports == ("br-int",)
    assert host1.switch.vsctl("list-ports", "br-int").split() == []


def test_a_repair_in_place_replaces_options_and_keeps_keys_it_does_not_own(host1):
    """An owned port repaired in place (ovsdbapp's db_set, db_clear, db_remove): its
    options are replaced (a stale key goes), its owned external_ids keys are set or
    dropped, and a key another tool wrote on the same row stays."""
    desired = desired_host(load(host1.fabric), "host1")
    port = desired.ports["vnet0"]
    sw = host1.switch
    with Switch(sw.db) as switch:
        switch.apply([BridgeCreate(desired.bridges["br-int"]), PortCreate(port)])
    sw.vsctl("set", "interface", "vnet0", "options:stray=1",
             "external_ids:iface-id=hypervisor", "external_ids:ovsnvgre-old=x")
    sw.vsctl("set", "port", "vnet0", "external_ids:iface-id=hypervisor")
    update = PortUpdate(port, iface_type=None, options={"a": "1"},
                        external_ids={"ovsnvgre-new": "y"}, stale_ids=("ovsnvgre-old",),
                        reason="test")
    with Switch(sw.db) as switch:
        assert switch.apply([update]) == 1
    iface, row = rows(host1, "Interface")["vnet0"], rows(host1, "Port")["vnet0"]
    assert ovs_map(iface["options"]) == {"a": "1"}
    for ids in (ovs_map(iface["external_ids"]), ovs_map(row["external_ids"])):
        assert ids["iface-id"] == "hypervisor"
        assert ids["ovsnvgre-new"] == "y"
        assert "ovsnvgre-old" not in ids
        assert port.external_ids.items() <= ids.items()
