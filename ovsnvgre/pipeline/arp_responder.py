"""Stage `arp_responder`: ARP requests for a CA the fabric knows, answered on the spot."""

from __future__ import annotations

from ovsnvgre.model import Vm
from ovsnvgre.pipeline.classify import vm_ipv4
from ovsnvgre.pipeline.flow import (
    PRIORITY_DEFAULT,
    PRIORITY_EXACT,
    PRIORITY_OVERRIDE,
    Flow,
    in_vsid,
    make,
)
from ovsnvgre.pipeline.stage import Context, Stage


def _flows(context: Context, table: int) -> set[Flow]:
    # ARP nobody answers here (replies, unknown CAs) is forwarded like any frame.
    flows = {make(table, PRIORITY_DEFAULT, [], [context.goto("forward")])}
    for vsid, members in sorted(context.members_of.items()):
        flows |= _answers(context, table, vsid, members, context.local_of.get(vsid, []))
    return flows


def _answers(context: Context, table: int, vsid: int, members: tuple[Vm, ...],
             local_members: list[Vm]) -> set[Flow]:
    flows: set[Flow] = set()
    vsid_match = in_vsid(vsid)
    for vm in members:
        address = vm_ipv4(vm)
        if address is None:
            continue
        # Formatted once: str() of an IPv4Address is ~8 us, a third of this stage at
        # 20,000 VMs when done for each of the two places it appears.
        ipv4 = str(address)
        flows.add(make(table, PRIORITY_EXACT, ["arp", vsid_match, f"arp_tpa={ipv4}",
                                               "arp_op=1"], [
            "move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[]",
            f"set_field:{vm.mac}->eth_src",
            "set_field:2->arp_op",
            "move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[]",
            f"set_field:{vm.mac}->arp_sha",
            "move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[]",
            f"set_field:{ipv4}->arp_spa",
            "IN_PORT",
        ]))
    for vm in local_members:
        ipv4 = vm_ipv4(vm)
        if ipv4 is not None:
            # A VM announcing or probing its own address is not answered with itself.
            flows.add(make(table, PRIORITY_OVERRIDE,
                           ["arp", f"in_port={vm.port}", f"arp_tpa={ipv4}"],
                           [context.goto("forward")]))
    return flows


STAGE = Stage(
    name="arp_responder",
    decides="an ARP request from a local VM for a CA of its VSID is answered on the spot with "
            "the fabric's MAC: it never crosses a tunnel. Other ARP goes on to `forward`.",
    drop_reason="no flow took it",
    flows=_flows,
    incremental=True,
)
