"""Every kind of flow the pipeline makes, installed on a real switch, reads back from
`ovs-ofctl dump-flows` as exactly the text ovsnvgre compares it with (Flow.dump_line):
a converged bridge is then recognised without parsing a single dumped flow."""

from __future__ import annotations

import itertools

import pytest
from fabrics import TWO_HOSTS

from ovsnvgre import fabric, openflow
from ovsnvgre.desired import desired_host
from ovsnvgre.model import KeyLayout, TunnelPorts
from ovsnvgre.pipeline import desired_flows
from ovsnvgre.plan import by_dump_line, diff_dump

# Beside TWO_HOSTS' IPv4 VMs, a VM whose CA is IPv6 (its own classify flow) on each host.
FABRIC = TWO_HOSTS + (
    '  green-a: {host: host1, subnet: blue, port: vnet2, mac: "02:00:00:00:70:01", '
    "ca: 2001:db8::1/64}\n"
    '  green-b: {host: host2, subnet: blue, port: vnet2, mac: "02:00:00:00:70:02", '
    "ca: 2001:db8::2/64}\n")

# Every tunnel mode and key layout the fabric offers, as they are added.
SHAPES = list(itertools.product([mode.value for mode in TunnelPorts],
                                [layout.value for layout in KeyLayout]))


@pytest.mark.parametrize("mode,layout", SHAPES, ids=[f"{m}-{k}" for m, k in SHAPES])
def test_every_flow_reads_back_as_ovs_ofctl_prints_it(lab, monkeypatch, mode, layout):
    lab.fabric.write_text(FABRIC.replace("tunnel_ports: per-vsid", f"tunnel_ports: {mode}")
                          .replace("key_layout: rfc7637", f"key_layout: {layout}"))
    host = lab.host("host1", "198.51.100.11/24", "198.51.100.1",
                    vm_ports=("vnet0", "vnet1", "vnet2"))
    result = host.ovsnvgre("up")
    assert result.returncode == 0, result.stderr
    monkeypatch.setenv("OVS_RUNDIR", str(host.switch.rundir))
    dumped = openflow.dump_lines("br-int").lines
    state = desired_host(fabric.load(lab.fabric), "host1")
    wanted = by_dump_line(desired_flows(state, set(state.ports)))
    assert len(wanted) > 20
    assert dumped - set(wanted) == set() and set(wanted) - dumped == set()
    # And so the comparison of a converged bridge finds nothing to change.
    assert not diff_dump("br-int", wanted, dumped)
