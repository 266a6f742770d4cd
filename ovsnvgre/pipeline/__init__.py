"""The OpenFlow pipeline of the integration bridge, as named, ordered stages.  Pure.

    VM port --classify (port -> VSID, anti-spoofing)--> arp_responder (ARP only)
        --> forward (known unicast by VSID+MAC, else flood within the VSID)
    VM port of a routed subnet --classify (to router_mac, or ARP for its gateway)-->
        gateway (ARP and ping for the router's own addresses) --> ttl --> route
        (rewrite, then the destination VM's port or tunnel, with its VSID's key)
        --> external (outside every subnet of the domain: to its namespace on the
        gateway host, through the tunnel with the source VSID's key)
    external side's bridge port (gateway host) --classify--> ttl --> route
    tunnel port --classify (port or key -> VSID)--> forward (never back into a tunnel)

``STAGES`` is the one place the order is written: stage *i* is table ``10 * i``,
each stage reaches the others by name (``Context.goto``), and `trace`, `status`,
`plan` and the README's pipeline table take names and documentation from here.
To add a stage, write its module (a ``STAGE``) and put it in ``STAGES``.

reg0 holds the frame's VSID, reg1 is 1 when the frame came from a tunnel, reg2 the
routing domain (its number, ``Context.domain_numbers``) of a frame a VM sent to the
distributed router, 0 for every other frame.  Every table drops what it does not match.
The router's stages come after `forward`: OpenFlow's goto_table only goes forward,
and classify hands frames to them directly, so the tables of the stages before keep
their numbers.
"""

from __future__ import annotations

from ovsnvgre.desired import DesiredHost
from ovsnvgre.pipeline import arp_responder, classify, external, forward, gateway, route, ttl
from ovsnvgre.pipeline.flow import COOKIE, Flow
from ovsnvgre.pipeline.stage import Context, Stage

__all__ = ["COOKIE", "STAGES", "Flow", "Stage", "describe", "desired_flows", "stage_of",
           "table_name", "table_of"]

STAGES: tuple[Stage, ...] = (classify.STAGE, arp_responder.STAGE, forward.STAGE,
                             gateway.STAGE, ttl.STAGE, route.STAGE, external.STAGE)

# Ten apart: the numbers the tables have always had (0, 10, 20), and room for
# a person's own experiments between them.
TABLE_STEP = 10
TABLES: dict[str, int] = {stage.name: index * TABLE_STEP for index, stage in enumerate(STAGES)}
_NAMES: dict[int, str] = {table: name for name, table in TABLES.items()}


def table_of(stage: str) -> int:
    """The table number of the stage called ``stage``; KeyError for an unknown name."""
    return TABLES[stage]


def table_name(table: int) -> str:
    """The stage name of table ``table``, or the number as text for a table of no stage."""
    return _NAMES.get(table, str(table))


def stage_of(table: int) -> Stage | None:
    """The stage of table ``table``, or None."""
    name = _NAMES.get(table)
    return next((stage for stage in STAGES if stage.name == name), None)


def describe(flow: Flow) -> str:
    """A flow in the pipeline's words: ``forward priority=100 reg0=0x1389 actions=...``."""
    match = f" {flow.match_text()}" if flow.match else ""
    return f"{table_name(flow.table)} priority={flow.priority}{match} actions={flow.actions}"


def desired_flows(desired: DesiredHost, live_ports: set[str]) -> set[Flow]:
    """The whole pipeline for this host, for the ports that are on the switch now.

    A port ovs-vswitchd has not opened (no OpenFlow port) gets no flows: a flow
    that names it could not be installed, and its traffic cannot arrive anyway.
    """
    context = Context.build(desired, TABLES, live_ports)
    flows: set[Flow] = set()
    for stage in STAGES:
        flows |= stage.flows(context, TABLES[stage.name])
    return flows
