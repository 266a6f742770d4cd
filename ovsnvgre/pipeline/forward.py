"""Stage `forward`: known unicast to its port or tunnel, the rest flooded within the VSID."""

from __future__ import annotations

from ovsnvgre.model import Vm
from ovsnvgre.pipeline.flow import (
    PRIORITY_DEFAULT,
    PRIORITY_EXACT,
    PRIORITY_FLOOD,
    Flow,
    from_tunnel,
    in_vsid,
    make,
)
from ovsnvgre.pipeline.stage import Context, Stage

# Broadcast and multicast: the group bit of the destination MAC (ovs-fields(7), eth_dst
# with a mask), as ovs-ofctl prints it.
MULTICAST = "dl_dst=01:00:00:00:00:00/01:00:00:00:00:00"


def _flows(context: Context, table: int) -> set[Flow]:
    flows = {make(table, PRIORITY_DEFAULT, [], [])}
    for vsid, members in sorted(context.members_of.items()):
        flows |= _vsid_flows(context, table, vsid, members, context.local_of.get(vsid, []))
    return flows


def _vsid_flows(context: Context, table: int, vsid: int, members: tuple[Vm, ...],  # noqa: C901 - one decision per branch, each documented; splitting would scatter it
                local_members: list[Vm]) -> set[Flow]:
    host = context.desired.host.name
    tunnel_out = context.tunnel_out
    flows: set[Flow] = set()
    vsid_match = in_vsid(vsid)
    local_ports = sorted(vm.port for vm in local_members)
    live_local = set(local_ports)
    for vm in members:
        if vm.host == host:
            if vm.port in live_local:
                flows.add(make(table, PRIORITY_EXACT, [vsid_match, f"dl_dst={vm.mac}"],
                               [f"output:{vm.port}"]))
            continue
        out = tunnel_out.get((vm.host, vsid))
        if out is None:
            continue
        flows.add(make(table, PRIORITY_EXACT, [vsid_match, from_tunnel(False),
                                               f"dl_dst={vm.mac}"], out))
    to_locals = [f"output:{port}" for port in local_ports]
    # Head-end replication: each peer's actions in turn; a key set once serves them all.
    to_peers: list[str] = []
    keys_set: set[str] = set()
    for peer in context.peers_of.get(vsid, []):
        for action in tunnel_out[peer, vsid]:
            if action.startswith("output:"):
                to_peers.append(action)
            elif action not in keys_set:
                keys_set.add(action)
                to_peers.append(action)
    if to_locals or to_peers:
        flows.add(make(table, PRIORITY_FLOOD, [vsid_match, from_tunnel(False)],
                       to_locals + to_peers))
    if to_locals:
        # Split horizon: a frame from a tunnel never goes back into one.  Its unicast
        # reaches a local VM through that VM's own flow above; any other unicast is
        # for a MAC no VM here has (a remote VM's, or none of the fabric's: every
        # local VM sends and receives with its fabric MAC) and is dropped by the
        # table's default, one flow per VSID instead of one per remote VM.
        flows.add(make(table, PRIORITY_FLOOD, [vsid_match, from_tunnel(True), MULTICAST],
                       to_locals))
    return flows


STAGE = Stage(
    name="forward",
    decides="known unicast goes straight to the local port, or to the tunnel (port, or key) of "
            "the host that has the MAC; broadcast, unknown unicast and multicast go to every "
            "other local port of the VSID and every peer that has the VSID (head-end "
            "replication). A frame that came from a tunnel never goes into one (split "
            "horizon): it reaches the local VM whose MAC it is for, or, broadcast and "
            "multicast, every local port of its VSID; other unicast from a tunnel is for "
            "no VM here and is dropped. Where the pipeline sets the key, `flow_id: hash` "
            "puts a hash of the inner flow in its FlowID bits.",
    drop_reason="no port of VSID {vsid} takes it",
    flows=_flows,
    incremental=True,
)
