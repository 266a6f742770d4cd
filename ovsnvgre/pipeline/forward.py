"""Stage `forward`: known unicast to its port or tunnel, the rest flooded within the VSID."""

from __future__ import annotations

from ovsnvgre.model import Vm
from ovsnvgre.pipeline.flow import (
    PRIORITY_DEFAULT,
    PRIORITY_EXACT,
    PRIORITY_FLOOD,
    REG_FLOOD_PART,
    Flow,
    from_tunnel,
    in_vsid,
    make,
    reg,
)
from ovsnvgre.pipeline.stage import Context, Stage

# Broadcast and multicast: the group bit of the destination MAC (ovs-fields(7), eth_dst
# with a mask), as ovs-ofctl prints it.
MULTICAST = "dl_dst=01:00:00:00:00:00/01:00:00:00:00:00"
# One OpenFlow message holds at most 64 KiB (a flow_mod's length is 16 bits): a flood
# to thousands of peers does not fit in one flow ("input too big": flow mode at 5,000
# hosts sets tun_dst and outputs per peer, 32 bytes).  1,500 actions of at most 32 bytes
# (an OpenFlow 1.3 set_field or output is 16) stay under 48 KiB.
FLOOD_ACTIONS_PER_FLOW = 1500


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
    # Head-end replication: each local port, then each peer's actions in turn.
    units = [[action] for action in to_locals] + [
        tunnel_out[peer, vsid] for peer in context.peers_of.get(vsid, [])]
    if units:
        flows |= _flood(table, [vsid_match, from_tunnel(False)], units)
    if to_locals:
        # Split horizon: a frame from a tunnel never goes back into one.  Its unicast
        # reaches a local VM through that VM's own flow above; any other unicast is
        # for a MAC no VM here has (a remote VM's, or none of the fabric's: every
        # local VM sends and receives with its fabric MAC) and is dropped by the
        # table's default, one flow per VSID instead of one per remote VM.
        flows.add(make(table, PRIORITY_FLOOD, [vsid_match, from_tunnel(True), MULTICAST],
                       to_locals))
    return flows


def _flood(table: int, match: list[str], units: list[list[str]],
           most: int = FLOOD_ACTIONS_PER_FLOW) -> set[Flow]:
    """The flood of one VSID: ``units`` (a local port's output, or a peer's actions:
    tun_dst, key, output) in turn, a key set once serving the units after it, as one flow
    when that holds at most ``most`` actions; else a chain of parts of whole units, each
    at most ``most`` actions and matched by its number in ``REG_FLOOD_PART`` (0 for the
    first).

    Each part first numbers the next and resubmits to this table, then sends its own:
    ovs-vswitchd refuses a resubmit once a packet's datapath actions exceed 64 KiB
    ("resubmits yielded over 64 kB of actions", ofproto-dpif-xlate.c), so every resubmit
    comes before any output.  The next parts may change the key and tun_dst: each part
    sets its own again (the key once per part)."""
    parts: list[list[str]] = [[]]
    once: set[str] = set()  # the current part's actions other than outputs
    for unit in units:
        new = [a for a in unit if a.startswith("output:") or a not in once]
        if parts[-1] and len(parts[-1]) + len(new) > most:
            parts.append([])
            once = set()
            new = unit
        once.update(a for a in new if not a.startswith("output:"))
        parts[-1] += new
    if len(parts) == 1:
        return {make(table, PRIORITY_FLOOD, match, parts[0])}
    flows = set()
    for number, part in enumerate(parts):
        chain = [f"set_field:{reg(number + 1)}->{REG_FLOOD_PART}", f"resubmit(,{table})"] \
            if number + 1 < len(parts) else []
        flows.add(make(table, PRIORITY_FLOOD, [*match, f"{REG_FLOOD_PART}={reg(number)}"],
                       chain + part))
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
            "puts a hash of the inner flow in its FlowID bits. A flood of more than 1,500 "
            "actions (thousands of peers; one OpenFlow message holds 64 KiB) is a chain of "
            "flows: each part numbers the next in reg3 and resubmits to this table.",
    drop_reason="no port of VSID {vsid} takes it",
    flows=_flows,
    incremental=True,
)
