"""The commands that act on this host: validate, plan, status, trace, watch, up, down,
confirm, rollback.  Each is a thin Click wrapper: one library call, then render.py.

cli.py's root group imports this module only when one of these commands runs.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from ovsnvgre import engine, render
from ovsnvgre import fabric as fabrics
from ovsnvgre import survey as surveys
from ovsnvgre import watch as watching
from ovsnvgre.options import (
    changing_command,
    config_option,
    db_option,
    fail_cleanly,
    host_option,
    json_option,
    progress,
    timeout_option,
    verbose_option,
    wait_option,
)
from ovsnvgre.safe import rollback as rollbacks

DRIFTED = 3


def _load_host(config: str, host: str | None) -> tuple[Any, str]:
    fab = fabrics.load(config)
    return fab, surveys.select_host(fab, host)


@click.command()
@config_option
@json_option
@fail_cleanly
def validate(config: str, as_json: bool) -> None:
    """Check a fabric file and say what it describes; changes nothing.

    Exits 2 with one line naming the file, the line and the entry at the
    first problem found.
    """
    render.validation(fabrics.load(config), config, as_json)


@click.command()
@config_option
@host_option
@db_option
@verbose_option
@json_option
@fail_cleanly
def plan(config: str, host: str | None, db: str | None, verbose: bool, as_json: bool) -> None:
    """Show what `up` would change on this host; changes nothing.

    Exit status 0 whether or not there are changes.
    """
    fab, chosen = _load_host(config, host)
    render.plan(surveys.plan(fab, chosen, db, progress=progress(as_json)), chosen, as_json,
                verbose)


@click.command()
@config_option
@host_option
@db_option
@json_option
@fail_cleanly
def status(config: str, host: str | None, db: str | None, as_json: bool) -> None:
    """Show this host as it runs, and how it drifted from the fabric.

    Reports the PA and where it sits, each tunnel (peer, VSID, key, port,
    state, BFD; with `tunnel_ports: flow`, one row per peer and VSID read from
    the installed flows, as the one flow port names no peer), each local VM
    (port, VSID, MAC, CA, link, MTU, packet counters), the flows per table,
    and warnings (MTU; a leased address back on the uplink); on a gateway host,
    each routing domain's external side (NIC, SNAT address, floating IPs, next
    hop, namespace, state) and its translations (the connections its conntrack
    table holds). Drift is every difference between the switch and the fabric
    (missing, extra or changed rows, flows, ports ovs-vswitchd refused, VM
    ports whose device was re-created while ovs-vswitchd holds the old one, an
    external side's namespace, links, addresses, routes or rules). Changes
    nothing.

    Exit status: 0 converged, 3 drifted (for monitoring), 1 or 2 on failure.
    """
    fab, chosen = _load_host(config, host)
    report = surveys.status(fab, chosen, db, progress(True))
    render.status(report, as_json)
    if not report.converged:
        sys.exit(DRIFTED)


@click.command()
@config_option
@click.option("--from", "source", required=True, metavar="VM",
              help="The VM the packet comes from (a VM of this host).")
@click.option("--to", "target", required=True, metavar="VM|ADDRESS",
              help="A VM name, or a CA (looked up in the source's virtual subnet first, "
                   "then in its routing domain).")
@click.option("--proto", default="icmp", show_default=True, metavar="icmp|arp|tcp:PORT|udp:PORT",
              help="The packet: an echo request, an ARP request for the address, or a "
                   "TCP/UDP packet to PORT.")
@click.option("--ttl", default=64, show_default=True, type=click.IntRange(0, 255),
              help="The IPv4 packet's TTL (1 shows the distributed router dropping it).")
@click.option("--host", metavar="NAME",
              help="The host the trace runs on. Default: the source VM's host.")
@db_option
@click.option("--raw", is_flag=True, help="Also print ofproto/trace's full output.")
@json_option
@fail_cleanly
def trace(config: str, source: str, target: str, proto: str, ttl: int, host: str | None,
          db: str | None, raw: bool, as_json: bool) -> None:
    """Show what the switch does with one packet, in the fabric's terms.

    Builds the packet from the fabric (the VM's port, MAC and CA, the
    destination's MAC when the fabric knows it, the distributed router's MAC
    off a routed subnet), runs `ovs-appctl ofproto/trace` on the integration
    bridge, and prints a verdict such as "delivered to red-b via tunnel to
    host2 with key 0x138900" (through the flow port: "via tunnel to host2
    (tun_dst 192.168.2.11) with key 0x138900"), "routed by contoso's
    distributed router to db-b (10.1.2.20) via tunnel to host2 with key
    0x138a00", "answered by the ARP responder" or "dropped: different virtual
    subnet". Changes nothing.
    """
    render.trace(surveys.trace(fabrics.load(config), source, target, proto, host, db, ttl),
                 raw, as_json)


@click.command()
@config_option
@host_option
@db_option
@timeout_option
@click.option("-v", "--verbose", is_flag=True,
              help="Also log the checks that found nothing to repair.")
@fail_cleanly
def watch(config: str, host: str | None, db: str | None, timeout: float,
          verbose: bool) -> None:
    """Keep this host converged until stopped (SIGTERM or Ctrl-C).

    Runs `up` at start, then again whenever something changes: an OVSDB row
    it reads (an owned row edited, a VM port appearing, a VM's device made
    again under the same name), the flows of the integration bridge (or
    ovs-vswitchd restarting and losing them), or the fabric file (a new valid
    file is taken; an invalid one is reported and the last good one kept).
    A file whose VMs alone changed, and row events of VM and tunnel ports,
    are applied incrementally: only the rows and flows they touch are read
    and written. SIGHUP runs it at once. Logs every repair with what drifted, one line
    each, on stderr. Any failed run is logged in one line (and, with --debug,
    its traceback) and tried again after 1, 2, 5, 10, then every 30 s.
    examples/ovsnvgre-watch.service runs it under systemd.
    """
    def log(message: str) -> None:
        click.echo(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} ovsnvgre watch: {message}",
                   err=True)

    debug = click.get_current_context().find_root().params.get("debug", False)
    watching.run(config, host, db, timeout, log, verbose, debug)


@click.command()
@changing_command
def up(config: str, host: str | None, db: str | None, timeout: float, wait: float,
       verify: bool, confirm: float | None, verbose: bool, as_json: bool) -> None:
    """Make this host's switch match the fabric.

    Creates the underlay bridge with the tep port holding the PA (moving the
    uplink's addresses and routes to it), the integration bridge, the GRE
    ports to the peers, the VM ports, and the OpenFlow pipeline that gives
    each VM port its tenant and keeps tenants apart. On a routing domain's
    gateway host, also the domain's network namespace (veth, macvlan on the
    external NIC, addresses, routes, nftables NAT and filter rules). Safe to
    run again: with nothing changed it writes nothing.

    One run changes a host at a time (others wait, see --wait). Before
    changing anything it saves the host's state in ovsnvgre-rollback.json in
    the OVS run directory; when the underlay changed it checks the host still
    reaches its network (see --verify) and rolls back by itself if not (or
    on any error after its first change): rows, addresses, routes and flows
    go back, and the namespaces the run made are deleted; a namespace it
    changed stays as it is, for the next `up` to converge. After
    a run that was killed, the next `up` takes its saved state over: it
    converges, and returns to that state if the check fails (`ovsnvgre
    rollback` returns to it at once instead).
    """
    fab, chosen = _load_host(config, host)
    try:
        result = engine.up(fab, chosen, db, timeout, progress(as_json), verify, confirm, wait)
    except engine.RefusedPorts as exc:
        # The rest was applied: a --confirm run still waits, and rolls back unconfirmed.
        render.run(exc.result, chosen, as_json, verbose)
        click.echo(f"ovsnvgre: error: {exc}", err=True)
        _await_confirmation(exc.result, confirm, as_json)
        sys.exit(exc.exit_code)
    render.run(result, chosen, as_json, verbose)
    _await_confirmation(result, confirm, as_json)


@click.command()
@changing_command
def down(config: str, host: str | None, db: str | None, timeout: float, wait: float,
         verify: bool, confirm: float | None, verbose: bool, as_json: bool) -> None:
    """Remove exactly what ovsnvgre made on this host.

    Deletes the bridges, ports and tunnels that carry this fabric's marker and
    the flows that carry ovsnvgre's cookie, and gives the uplink back the
    addresses and routes `up` moved off it; on a gateway host, deletes the
    routing domains' namespaces with their links, nftables rules and
    conntrack state. Rows, flows, namespaces and rules ovsnvgre did not
    create are never touched. The state before is saved and the underlay
    checked afterwards, as for `up`; a rollback does not make a deleted
    namespace again (the next `up` does).
    """
    fab, chosen = _load_host(config, host)
    result = engine.down(fab, chosen, db, timeout, progress(as_json), verify, confirm, wait)
    render.run(result, chosen, as_json, verbose, sign="-")
    _await_confirmation(result, confirm, as_json)


def _await_confirmation(result: engine.RunResult, seconds: float | None, as_json: bool) -> None:
    if result.timer is None or seconds is None:
        return
    click.echo(f"waiting up to {seconds:g} s for `ovsnvgre confirm` (from another shell); "
               "without it the run is rolled back, even if this command is interrupted",
               err=True)
    try:
        outcome = rollbacks.await_confirmation(result.timer, seconds, result.left)
    except KeyboardInterrupt:
        click.echo("ovsnvgre: interrupted; the rollback timer keeps running: "
                   "`ovsnvgre confirm` keeps the change, `ovsnvgre rollback` undoes it now",
                   err=True)
        sys.exit(130)
    render.confirmation(outcome, as_json)
    if not outcome.confirmed:
        sys.exit(1)


@click.command("confirm")
@db_option
@wait_option
@fail_cleanly
def confirm_command(db: str | None, wait: float) -> None:
    """Keep the change of a running `up --confirm` (or of a run that crashed).

    Removes the saved state of the run, so that nothing rolls it back.
    """
    click.echo(rollbacks.confirm(db, wait))


@click.command("rollback")
@db_option
@wait_option
@fail_cleanly
def rollback_command(db: str | None, wait: float) -> None:
    """Return the host to the state saved before the last unfinished run.

    Use it after a run was killed or crashed half-way (instead of letting the
    next `up` take that state over), or to undo a pending `up --confirm` at
    once. Restores the rows ovsnvgre owns, the addresses, routes and link
    states of the uplink and the tep port, and the owned flows, and deletes
    the routing domains' namespaces the run made (one it changed or deleted
    stays so, for the next `up`). Exits 1 when there is nothing to roll back,
    or when such a namespace leaves the host unlike before the run (named).
    """
    click.echo(rollbacks.rollback(db, progress(False), wait))
