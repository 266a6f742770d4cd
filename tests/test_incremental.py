"""watch's incremental runs compute what the full computation computes (incremental.py).

Random small fabrics, random edits of their VMs and of which ports are on the switch:
after every step, the next Model's desired rows and flows are exactly those of the
full computation (desired_host, pipeline.desired_flows), and the flow changes it
returns take the previous flows to the new ones.
"""

from __future__ import annotations

import ipaddress
from dataclasses import fields, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from ovsnvgre.desired import desired_host
from ovsnvgre.incremental import (
    CONTEXT_LOCAL,
    CONTEXT_SAME,
    CONTEXT_TUNNELS,
    Model,
    pipeline_flows,
    vm_changes,
)
from ovsnvgre.model import (
    DatapathType,
    Fabric,
    FabricIndex,
    FlowId,
    Host,
    KeyLayout,
    Overlay,
    RoutingDomain,
    TunnelPorts,
    Underlay,
    VirtualSubnet,
    Vm,
)
from ovsnvgre.pipeline import STAGES, desired_flows
from ovsnvgre.pipeline.stage import Context

HOSTS = 4
VSIDS = (5001, 5002, 5003)


def make_fabric(mode: str, layout: str, vms: dict[str, tuple[int, int, int, int]],
                routed: bool = False, flow_id: str = "zero") -> Fabric:
    """A fabric of HOSTS hosts and the VMs ``name -> (host, vsid index, port, address)``:
    the MAC and CA follow the address number, the port name the port number.  With
    ``routed``, the first two subnets are one routing domain (the third stays L2)."""
    hosts = {f"h{i}": Host(f"h{i}", ipaddress.IPv4Interface(f"198.51.{100 + i}.11/24"),
                           "eth1", ipaddress.IPv4Address(f"198.51.{100 + i}.1"))
             for i in range(HOSTS)}
    subnets = {f"s{i}": VirtualSubnet(f"s{i}", vsid, ipaddress.IPv4Network(f"10.{i}.0.0/16"),
                                      "rd" if routed and i < 2 else None)
               for i, vsid in enumerate(VSIDS)}
    return Fabric(
        name="prop", datapath_type=DatapathType.NETDEV, underlay=Underlay(),
        overlay=Overlay(key_layout=KeyLayout(layout), tunnel_ports=TunnelPorts(mode),
                        flow_id=FlowId(flow_id)),
        hosts=hosts, virtual_subnets=subnets,
        routing_domains={"rd": RoutingDomain("rd")} if routed else {},
        vms={name: Vm(name, f"h{host}", f"s{subnet}", f"vnet{port}",
                      f"02:00:00:00:{address // 256:02x}:{address % 256:02x}",
                      ipaddress.ip_interface(f"10.{subnet}.{address // 256}.{address % 256 + 2}"
                                             "/16"))
             for name, (host, subnet, port, address) in vms.items()})


def valid(vms: dict[str, tuple[int, int, int, int]]) -> dict[str, tuple[int, int, int, int]]:
    """The VMs without the ones that would break the fabric's rules (a port used twice on
    a host, an address twice in a subnet): what fabric.load would refuse."""
    ports, addresses, kept = set(), set(), {}
    for name, (host, subnet, port, address) in sorted(vms.items()):
        # MACs are unique fabric-wide here: routing finds a VM by its MAC across subnets.
        if (host, port) in ports or address in addresses:
            continue
        ports.add((host, port))
        addresses.add(address)
        kept[name] = (host, subnet, port, address)
    return kept


VM = st.tuples(st.integers(0, HOSTS - 1), st.integers(0, len(VSIDS) - 1),
               st.integers(0, 5), st.integers(0, 40))
NAMES = st.sampled_from([f"vm{i}" for i in range(12)])
EDIT = st.one_of(
    st.tuples(st.just("set"), NAMES, VM),          # add, or change every field
    st.tuples(st.just("drop"), NAMES, st.none()),
    st.tuples(st.just("flip"), st.integers(0, 50), st.none()),  # a port comes or goes
)


@settings(max_examples=300, deadline=None)
@given(mode=st.sampled_from(["per-vsid", "per-peer", "flow"]),
       layout=st.sampled_from(["rfc7637", "plain"]),
       routed=st.booleans(), flow_id=st.sampled_from(["zero", "hash"]),
       start=st.dictionaries(NAMES, VM, max_size=10),
       edits=st.lists(st.lists(EDIT, min_size=1, max_size=3), min_size=1, max_size=5),
       live_share=st.integers(0, 3))
def test_incremental_steps_equal_the_full_computation(mode, layout, routed, flow_id, start,
                                                      edits, live_share):
    if flow_id == "hash" and mode == "per-vsid":
        flow_id = "zero"  # a fixed key has no room for a FlowID (validation refuses it)
    vms = valid(start)
    fabric = make_fabric(mode, layout, vms, routed, flow_id)
    desired = desired_host(fabric, "h0")
    # Some ports not on the switch (yet): every fourth, from ``live_share`` on.
    names = sorted(desired.ports)
    live = {name for i, name in enumerate(names) if (i + live_share) % 4}
    model = Model.build(desired, live)
    assert model.flows == desired_flows(desired, live)
    for step in edits:
        for kind, name, value in step:
            if kind == "set":
                vms[name] = value
            elif kind == "drop":
                vms.pop(name, None)
        vms = valid(vms)
        new = make_fabric(mode, layout, vms, routed, flow_id)
        changed = vm_changes(model.fabric, new)
        assert changed is not None
        want = desired_host(new, "h0")
        wanted_names = sorted(want.ports)
        live = {port for port in live if port in want.ports}
        live |= {port for port in want.ports if port not in model.desired.ports}
        for kind, number, _ in step:
            if kind == "flip" and wanted_names:
                live ^= {wanted_names[number % len(wanted_names)]}
        before = set(model.flows)  # step hands its set on, changed
        had_index = "index" in model.fabric.__dict__
        model, changes = model.step(new, changed, live)
        if had_index and changed:
            assert "index" in new.__dict__, "the index was built again"
        assert new.index == FabricIndex.build(new)
        assert model.desired == want
        full = desired_flows(want, live)
        assert model.flows == full
        assert pipeline_flows(model.context) == full
        replaced = {flow.key for flow in changes.add}
        assert {f for f in before if f.key not in replaced} - set(changes.delete) \
            | set(changes.add) == full
        assert not set(changes.add) & before, "a flow added that was there already"


def test_anything_but_vms_is_not_incremental():
    fabric = make_fabric("per-vsid", "rfc7637", {"vm0": (0, 0, 0, 0), "vm1": (1, 0, 0, 1)})
    assert vm_changes(fabric, replace(fabric, source="elsewhere")) == set()
    assert vm_changes(fabric, make_fabric("per-peer", "rfc7637", dict(
        vm0=(0, 0, 0, 0), vm1=(1, 0, 0, 1)))) is None
    other_host = dict(fabric.hosts)
    other_host["h1"] = replace(other_host["h1"], uplink="eth2")
    assert vm_changes(fabric, replace(fabric, hosts=other_host)) is None
    subnets = {**fabric.virtual_subnets, "s9": VirtualSubnet("s9", 7000)}
    assert vm_changes(fabric, replace(fabric, virtual_subnets=subnets)) is None


def test_every_context_field_is_sorted():
    """A field added to Context must say what it comes from (incremental.py), or every
    incremental step builds the Context whole."""
    assert {spec.name for spec in fields(Context)} == CONTEXT_SAME | CONTEXT_LOCAL | \
        CONTEXT_TUNNELS


def test_every_stage_says_whether_it_is_incremental():
    """The flag is a promise the property test above holds the stages to; a new stage
    starts as not incremental (recomputed whole on every change)."""
    assert {stage.name: stage.incremental for stage in STAGES} == {
        "classify": True, "arp_responder": True, "forward": True, "gateway": False,
        "ttl": False, "route": False, "external": False}
