"""How results print: plain lines for people, JSON for scripts (Click's echo)."""

from __future__ import annotations

import json
from typing import Any

import click

from ovsnvgre import fabric as fabrics
from ovsnvgre.changes import Plan
from ovsnvgre.engine import RunResult
from ovsnvgre.model import Fabric, FlowId
from ovsnvgre.safe.rollback import Confirmation
from ovsnvgre.status import Report, routing_domains
from ovsnvgre.trace import TraceResult


def _json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def _changes(lines: list[str], sign: str) -> None:
    for line in lines:
        click.echo(f"{sign} {line}")


def _notes(notes: tuple[str, ...] | list[str]) -> None:
    for note in notes:
        click.echo(f"note: {note}")


def validation(fab: Fabric, config: str, as_json: bool) -> None:
    """`validate`: what the fabric describes, and its warnings (stderr unless --json)."""
    warnings = fabrics.warnings(fab)
    if as_json:
        _json({"fabric": fab.name, "file": config, "valid": True, "hosts": len(fab.hosts),
               "virtual_subnets": len(fab.virtual_subnets), "vms": len(fab.vms),
               "datapath_type": fab.datapath_type, "key_layout": fab.overlay.key_layout,
               "tunnel_ports": fab.overlay.tunnel_ports, "flow_id": fab.overlay.flow_id,
               "warnings": warnings, "router_mac": fab.overlay.router_mac,
               "routing_domains": routing_domains(fab)})
        return
    for warning in warnings:
        click.echo(f"{config}: warning: {warning}", err=True)
    domains = ", ".join(f"{name}: {', '.join(s.name for s in fab.subnets_in(name)) or 'none'}"
                        for name in fab.routing_domains)
    routed = f", {len(fab.routing_domains)} routing domains ({domains})" if domains else ""
    click.echo(f"{config}: fabric {fab.name!r} is valid: {len(fab.hosts)} hosts, "
               f"{len(fab.virtual_subnets)} virtual subnets, {len(fab.vms)} VMs{routed} "
               f"({fab.datapath_type} datapath, {fab.overlay.key_layout} keys"
               f"{' + FlowID hash' if fab.overlay.flow_id == FlowId.HASH else ''}, "
               f"{fab.overlay.tunnel_ports} tunnel ports)")


def plan(result: Plan, host: str, as_json: bool, verbose: bool) -> None:
    """`plan`: each change (``+``), or that there is none, then the notes."""
    if as_json:
        _json(result.as_dict())
        return
    if result.blockers:
        for blocker in result.blockers:
            click.echo(f"blocked: {blocker}")
        click.echo(f"host {host}: `up` would refuse before changing anything "
                   f"({len(result.blockers)} blocker(s))")
    elif result.empty:
        click.echo(f"host {host}: no changes: the switch matches the fabric")
    else:
        _changes(result.lines(verbose), "+")
        click.echo(f"host {host}: changes planned")
    _notes(result.notes)


def run(result: RunResult, host: str, as_json: bool, verbose: bool, sign: str = "+") -> None:
    """`up` (``+``) or `down` (``-``): what changed, and the underlay check with --json."""
    if as_json:
        data = result.plan.as_dict()
        data.update({"changed": result.changed, "ovsdb_writes": result.ovsdb_writes,
                     "kernel_changes": result.kernel_changes, "flow_mods": result.flow_mods,
                     "refused": result.refused,
                     "underlay_check": result.check.as_dict() if result.check else None})
        _json(data)
        return
    if not result.changed:
        click.echo(f"host {host}: no changes")
    else:
        _changes(result.plan.lines(verbose), sign)
        click.echo(f"host {host}: changes applied")
    _notes(result.plan.notes)


def status(report: Report, as_json: bool) -> None:
    """`status`: the report as text or JSON."""
    if as_json:
        _json(report.as_dict())
        return
    for line in report.lines():
        click.echo(line)


def trace(result: TraceResult, raw: bool, as_json: bool) -> None:
    """`trace`: the flow traced, optionally OVS's own trace, and the verdict."""
    if as_json:
        data = result.as_dict()
        if raw:
            data["raw"] = result.raw
        _json(data)
        return
    click.echo(f"flow: {result.probe.flow}")
    if raw:
        click.echo(result.raw.rstrip())
    click.echo(result.verdict)


def confirmation(outcome: Confirmation, as_json: bool) -> None:
    """How `up --confirm` ended."""
    if as_json:
        click.echo(json.dumps({"confirmed": outcome.confirmed, "detail": outcome.detail}))
    else:
        click.echo(outcome.detail)
