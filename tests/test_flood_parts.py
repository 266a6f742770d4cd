"""A VSID flooded to more peers than one OpenFlow flow can hold (64 KiB a message): the
flood is a chain of flows (forward.py), on a real switch; and as plain flows."""

from __future__ import annotations

import ipaddress
import json

from fabrics import load
from test_trace import Tracer

from ovsnvgre import fabric
from ovsnvgre.desired import desired_host
from ovsnvgre.pipeline import desired_flows
from ovsnvgre.pipeline.forward import FLOOD_ACTIONS_PER_FLOW

RED_A = "02:00:00:00:50:01"
# Flow mode: 2 actions a peer (tun_dst, output), 32 bytes: 2,100 peers are 67 KB, more
# than one flow_mod holds; three parts of at most 1,500 actions.
PEERS = 2100


def wide_vsid(peers: int, mode: str) -> str:
    """host1 (the lab's) with red-a in VSID 5001, and ``peers`` hosts with one VM each in
    it; no packet is sent to their PAs (only traced)."""
    lines = ["fabric: wide", "datapath_type: netdev",
             f"overlay: {{bridge: br-int, key_layout: rfc7637, tunnel_ports: {mode}}}",
             "hosts:",
             "  host1: {pa: 198.51.100.11/24, uplink: eth1, gateway: 198.51.100.1}"]
    lines += [f"  p{n}: {{pa: {ipaddress.ip_address('10.64.0.2') + n}/10, uplink: eth1, "
              "gateway: 10.64.0.1}" for n in range(peers)]
    lines += ["virtual_subnets:", "  red: {vsid: 5001}", "vms:",
              f'  red-a: {{host: host1, subnet: red, port: vnet0, mac: "{RED_A}", '
              "ca: 10.0.0.1/16}"]
    lines += [f'  r{n}: {{host: p{n}, subnet: red, port: vnet0, '
              f'mac: "02:01:00:{n >> 8 & 255:02x}:{n & 255:02x}:01", '
              f"ca: 10.0.{(n + 2) >> 8}.{(n + 2) & 255}/16}}" for n in range(peers)]
    return "\n".join(lines) + "\n"


def test_a_wide_flood_is_split_into_parts_that_chain():
    desired = desired_host(load(wide_vsid(PEERS, "flow")), "host1")
    flood = sorted((f for f in desired_flows(desired, {"vnet0", "gre-flow"})
                    if f.priority == 50 and "reg1=0" in f.match),
                   key=lambda f: sorted(f.match))
    assert [sorted(t for t in f.match if t.startswith("reg3=")) for f in flood] == [
        ["reg3=0"], ["reg3=0x1"], ["reg3=0x2"]]
    sent = []
    for number, flow in enumerate(flood):
        actions = flow.actions.replace("resubmit(,", "resubmit(").split(",")
        # Every resubmit comes before any output (ovs-vswitchd refuses one after 64 KiB
        # of datapath actions); each part sets the key and each of its peers' tun_dst.
        if number < 2:
            assert actions[:2] == [f"set_field:{number + 1:#x}->reg3", "resubmit(20)"]
        assert "resubmit(20)" not in actions[2:]
        assert actions.count("set_field:0x138900->tun_id") == 1
        assert len(actions) <= FLOOD_ACTIONS_PER_FLOW + 3
        for before, action in zip(actions, actions[1:], strict=False):
            if action == "output:gre-flow":
                assert before.endswith("->tun_dst") or before.endswith("->tun_id"), before
        sent += [a for a in actions if a.endswith("->tun_dst")]
    assert len(sent) == len(set(sent)) == PEERS


def test_every_part_of_the_chain_sends_its_peers(lab):
    # Before the chain: `up` failed with ovs-ofctl's "input too big" for this flow.  The
    # OpenFlow trace shows every part's outputs (the peers' next hop is not resolved here,
    # so no datapath action is built: on the userspace datapath a packet's actions stop
    # at 64 KB, ~780 tunnel copies, which validate warns of).
    lab.fabric.write_text(wide_vsid(PEERS, "flow"))
    host = lab.host("host1", "198.51.100.11/24", "198.51.100.1", vm_ports=("vnet0",))
    result = host.ovsnvgre("up", "--no-verify")
    assert result.returncode == 0, result.stderr
    again = host.ovsnvgre("up", "--no-verify")
    assert "no changes" in again.stdout, again.stdout + again.stderr
    broadcast = Tracer(host)(f"in_port=vnet0,dl_src={RED_A},dl_dst=ff:ff:ff:ff:ff:ff,ip,"
                             "nw_src=10.0.0.1,nw_dst=10.0.255.255")
    assert len(set(broadcast.tun_dsts)) == len(broadcast.outputs) == PEERS
    assert "over 64 kB" not in broadcast.text
    assert {tun_id for _, tun_id in broadcast.outputs} == {5001 << 8}
    status = host.ovsnvgre("status", "--json")
    assert status.returncode == 0, status.stdout[-2000:] + status.stderr
    rows = json.loads(status.stdout)["tunnels"]
    assert len({row["peer"] for row in rows}) == PEERS
    assert all(row["state"] == "up" for row in rows), [r for r in rows if r["state"] != "up"][:3]


def test_validate_warns_of_a_vsid_wider_than_the_userspace_datapath_floods():
    netdev = load(wide_vsid(800, "flow"))
    assert fabric.warnings(netdev) == [
        "virtual subnet red (VSID 5001) has VMs on 801 hosts: with datapath_type netdev a "
        "broadcast, multicast or unknown unicast frame reaches only about 750 peers (Open "
        "vSwitch translates at most 64 KB of actions a packet); the kernel datapath (system) "
        "reaches them all"]
    assert fabric.warnings(load(wide_vsid(800, "flow").replace(
        "datapath_type: netdev", "datapath_type: system"))) == []
    assert fabric.warnings(load(wide_vsid(700, "flow"))) == []


def test_per_peer_and_per_vsid_floods_chain_too():
    for mode, port_count in (("per-peer", 1600), ("per-vsid", 1600)):
        desired = desired_host(load(wide_vsid(port_count, mode)), "host1")
        ports = set(desired.ports)
        flood = [f for f in desired_flows(desired, ports)
                 if f.priority == 50 and "reg1=0" in f.match and "reg0=0x1389" in f.match]
        assert len(flood) == 2, mode
        outputs = [a for f in flood for a in f.actions.split(",") if a.startswith("output:")]
        # every peer's port, and red-a's own (OVS sends nothing back to the in_port)
        assert len(outputs) == len(set(outputs)) == port_count + 1, mode
        assert "output:vnet0" in outputs
        for flow in flood:
            assert flow.actions.count("->tun_id") == (1 if mode == "per-peer" else 0), mode
