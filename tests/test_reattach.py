"""A VM's device deleted and made again under the same name (a VM restart with a fixed tap
name): on the userspace datapath ovs-vswitchd keeps a handle on the deleted device and the
VM is cut off, while its Port row, OpenFlow number and Interface row all look fine.

Packets prove each step: the VMs reach each other before, not after the device is made
again, and again once `up` attached the port afresh.
"""

from __future__ import annotations

import json
import time

from ovsenv import sh, wait_for

DRIFTED = 3
RED_A = ("vnet0", "02:00:00:00:50:01", "10.0.0.1/24")
RED_B = ("vnet0", "02:00:00:00:50:02", "10.0.0.2/24")
OWNER_IDS = ("external_ids:ovsnvgre-fabric=contoso", "external_ids:ovsnvgre-role=vm",
             "external_ids:ovsnvgre-vm=red-a", "external_ids:ovsnvgre-vsid=5001")


def two_hosts(lab):
    host1 = lab.host("host1", "198.51.100.11/24", "198.51.100.1")
    host2 = lab.host("host2", "203.0.113.11/24", "203.0.113.1")
    red_a = lab.vm(host1, *RED_A)
    red_b = lab.vm(host2, *RED_B)
    return host1, host2, red_a, red_b


def status(host) -> tuple[int, dict]:
    result = host.ovsnvgre("status", "--json")
    assert result.returncode in (0, DRIFTED), result.stderr
    return result.returncode, json.loads(result.stdout)


def port_row(host, name: str) -> dict:
    query = ["Open_vSwitch", {"op": "select", "table": "Port", "where": [["name", "==", name]],
                              "columns": ["_uuid", "_version", "external_ids"]}]
    out = sh("ovsdb-client", "transact", host.switch.db, json.dumps(query)).stdout
    return json.loads(out)[0]["rows"][0]


def ofport(host, name: str) -> int:
    return int(host.switch.vsctl("get", "interface", name, "ofport"))


def alive(vm, address: str) -> None:
    """Wait until ``vm`` reaches ``address``.  Not at once: the failed pings while the port
    was dead left the VM's ARP entry FAILED, and Linux resolves it again only after a
    back-off (measured: up to ~3 s; with the VM's neighbour table flushed, the first ping
    after `up` answers, 10 times out of 10)."""
    began = time.monotonic()
    wait_for(lambda: vm.ping(address, count=1), 20, f"the VM to reach {address}")
    print(f"the VM reached {address} {time.monotonic() - began:.1f} s after the repair")


def test_status_reports_a_recreated_device_and_up_attaches_it_again(lab):
    host1, host2, red_a, red_b = two_hosts(lab)
    for host in (host1, host2):
        assert host.ovsnvgre("up").returncode == 0
    assert red_a.ping("10.0.0.2") and red_a.tcp(red_b)
    number = ofport(host1, "vnet0")
    uuid = port_row(host1, "vnet0")["_uuid"]

    lab.replug(host1, "vnet0", red_a)
    assert not red_a.ping("10.0.0.2")
    assert not red_b.ping("10.0.0.1")
    # What OVS itself shows looks healthy: same OpenFlow number, no error.
    assert ofport(host1, "vnet0") == number
    assert host1.switch.vsctl("get", "interface", "vnet0", "error").strip() == "[]"
    code, report = status(host1)
    assert code == DRIFTED and not report["converged"]
    assert report["drift"][0].startswith("remove vm port vnet0 from br-int to attach it "
                                         "again: its device vnet0 was deleted and re-created")
    assert "add vm port vnet0 to br-int" in report["drift"]
    vm = next(v for v in report["vms"] if v["name"] == "red-a")
    assert vm["state"] == "stale: device re-created"
    assert "to attach it again" in host1.ovsnvgre("plan").stdout

    result = host1.ovsnvgre("up")
    assert result.returncode == 0, result.stderr
    assert "remove vm port vnet0 from br-int to attach it again" in result.stdout
    assert "in two transactions (1 port(s) attached again in the second)" in (
        result.stdout + result.stderr)
    alive(red_a, "10.0.0.2")
    assert red_b.ping("10.0.0.1") and red_a.tcp(red_b)
    # A new row, still owned: the marker is on it.
    row = port_row(host1, "vnet0")
    assert row["_uuid"] != uuid
    assert dict(row["external_ids"][1])["ovsnvgre-fabric"] == "contoso"
    again = host1.ovsnvgre("up")
    assert again.returncode == 0 and "no changes" in again.stdout
    assert status(host1)[0] == 0


def test_one_transaction_does_not_make_the_switch_open_the_device_again(lab):
    """Why the port is created again in a second transaction: removed and added in one,
    ovs-vswitchd sees the same port before and after and keeps its stale handle."""
    host1, host2, red_a, red_b = two_hosts(lab)
    for host in (host1, host2):
        assert host.ovsnvgre("up").returncode == 0
    lab.replug(host1, "vnet0", red_a)
    before = port_row(host1, "vnet0")["_uuid"]
    host1.switch.vsctl("--", "del-port", "br-int", "vnet0", "--", "add-port", "br-int", "vnet0",
                       "--", "set", "port", "vnet0", *OWNER_IDS,
                       "--", "set", "interface", "vnet0", *OWNER_IDS)
    assert port_row(host1, "vnet0")["_uuid"] != before  # a new row indeed
    assert not red_a.ping("10.0.0.2")
    assert status(host1)[0] == DRIFTED
    assert host1.ovsnvgre("up").returncode == 0
    alive(red_a, "10.0.0.2")


def test_a_port_the_hypervisor_attached_is_reported_never_recreated(lab):
    host1, host2, red_a, red_b = two_hosts(lab)
    for host in (host1, host2):
        assert host.ovsnvgre("up").returncode == 0
    sw = host1.switch
    sw.vsctl("del-port", "br-int", "vnet0")
    sw.vsctl("add-port", "br-int", "vnet0", "--", "set", "interface", "vnet0",
             "external_ids:iface-id=vm-red-a")
    assert host1.ovsnvgre("up").returncode == 0
    assert red_a.ping("10.0.0.2")

    lab.replug(host1, "vnet0", red_a)
    assert not red_a.ping("10.0.0.2")
    row = port_row(host1, "vnet0")
    code, report = status(host1)
    assert code == DRIFTED
    assert any(line.startswith("VM port vnet0 is dead: its device vnet0 was deleted and "
                               "re-created") and "not ovsnvgre's Port row" in line
               for line in report["drift"]), report["drift"]
    result = host1.ovsnvgre("up")
    assert result.returncode == 0, result.stderr
    assert "note: VM port vnet0 (red-a) is dead" in result.stdout
    assert "ovs-vsctl del-port br-int vnet0" in result.stdout
    assert port_row(host1, "vnet0") == row  # not re-created, not even written
    assert not red_a.ping("10.0.0.2")

    # Its owner attaches it again (as a hypervisor does when it starts the VM).
    sw.vsctl("del-port", "br-int", "vnet0")
    sw.vsctl("add-port", "br-int", "vnet0", "--", "set", "interface", "vnet0",
             "external_ids:iface-id=vm-red-a")
    assert host1.ovsnvgre("up").returncode == 0
    alive(red_a, "10.0.0.2")
    assert red_a.tcp(red_b)
    assert status(host1)[0] == 0
