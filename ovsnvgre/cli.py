"""The `ovsnvgre` command: thin Click wrappers, one library call each."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ovsnvgre import __version__
from ovsnvgre.errors import OvsnvgreError

F = TypeVar("F", bound=Callable[..., Any])

CONFIG_ENV = "OVSNVGRE_CONFIG"


def _fail_cleanly(func: F) -> F:
    """One line and an exit status for every failure; the traceback only with --debug."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = click.get_current_context().find_root().params.get("debug", False)
        try:
            return func(*args, **kwargs)
        except OvsnvgreError as exc:
            if debug:
                raise
            click.echo(f"ovsnvgre: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("ovsnvgre: interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - the last line of defence for users
            if debug:
                raise
            click.echo(f"ovsnvgre: internal error: {type(exc).__name__}: {exc} "
                       "(run with --debug for the traceback)", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


config_option = click.option(
    "-c", "--config", "config", envvar=CONFIG_ENV, required=True,
    type=click.Path(dir_okay=False), metavar="FILE",
    help=f"The fabric file (YAML). Also read from ${CONFIG_ENV}.")
host_option = click.option(
    "--host", metavar="NAME",
    help="The fabric host this machine is. Default: the one host whose PA is configured "
         "here or whose name is this machine's hostname.")
db_option = click.option(
    "--db", metavar="REMOTE",
    help="The OVSDB remote, like unix:/run/openvswitch/db.sock or tcp:127.0.0.1:6640. "
         "Default: unix:$OVS_RUNDIR/db.sock ($OVS_RUNDIR defaults to /var/run/openvswitch).")
timeout_option = click.option(
    "--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
    metavar="SECONDS", help="How long to wait for ovs-vswitchd to apply the change.")
verbose_option = click.option("-v", "--verbose", is_flag=True,
                               help="List each flow added or deleted, not only counts per "
                                    "table.")
json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print the result as JSON for scripts.")


verify_option = click.option(
    "--verify/--no-verify", default=True, show_default=True,
    help="After changing the underlay, check that the host still reaches what it reached "
         "before (the gateways of the moved routes by ARP, the underlay.probe addresses) "
         "and, after `up`, the fabric's gateway; if not, restore the state before the run "
         "and exit 1.")
confirm_option = click.option(
    "--confirm", "confirm", type=click.FloatRange(min=1), metavar="SECONDS",
    help="After applying, wait this long for `ovsnvgre confirm` (from another shell); "
         "without it the whole run is rolled back, also if this process or its SSH session "
         "dies (a detached timer does it).")


def _changing_command(func: F) -> F:
    """The options of the commands that change the switch, and clean failure."""
    for option in reversed((config_option, host_option, db_option, timeout_option,
                            verify_option, confirm_option, verbose_option, json_option)):
        func = option(func)
    return _fail_cleanly(func)  # type: ignore[return-value]


def _progress(as_json: bool) -> Callable[[str], None]:
    def report(message: str) -> None:
        if not as_json:
            click.echo(f"... {message}", err=True)

    return report


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ovsnvgre")
@click.option("--debug", is_flag=True, help="Show tracebacks and library logs on failure.")
def main(debug: bool) -> None:
    """Provision Open vSwitch hosts for NVGRE overlay networks (RFC 7637).

    One fabric file describes every host's Provider Address, the virtual
    subnets (VSIDs) and every VM; `ovsnvgre up` on each host makes its switch
    match the file, and running it again changes nothing.

    Exit status: 0 success, 1 the switch or the system failed, 2 a bad fabric
    file or bad arguments, 3 `status` found the host drifted from the fabric.
    """
    logging.basicConfig(level=logging.DEBUG if debug else logging.CRITICAL,
                        format="%(levelname)s %(name)s: %(message)s")


def run() -> None:
    """The `ovsnvgre` command: main(), then an exit that does not free every object.

    A run at fabric scale holds some 100,000 objects (flows, VMs, rows); letting the
    interpreter free them one by one on the way out took ~35 ms of a 0.5 s no-op.
    Output and logs are flushed first, and nothing else is left to do: the
    `--confirm` timer is a process of its own, and the OVSDB connection is closed.
    """
    import os

    try:
        main()
        status = 0
    except SystemExit as exc:
        status = _exit_status(exc.code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:  # the reader went away (`ovsnvgre plan | head -1`)
            status = status or 1  # as Click does when a write meets a closed pipe
    os._exit(status)


def _exit_status(code: object) -> int:
    """What sys.exit(code) would leave the process with."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _load(config: str) -> Any:
    from ovsnvgre import fabric

    return fabric.load(config)


@main.command()
@config_option
@json_option
@_fail_cleanly
def validate(config: str, as_json: bool) -> None:
    """Check a fabric file and say what it describes; changes nothing.

    Exits 2 with one line naming the file, the line and the entry at the
    first problem found.
    """
    fab = _load(config)
    warnings = fab.warnings()
    summary = {"fabric": fab.name, "file": config, "valid": True, "hosts": len(fab.hosts),
               "virtual_subnets": len(fab.subnets), "vms": len(fab.vms),
               "datapath_type": fab.datapath_type, "key_layout": fab.overlay.key_layout,
               "tunnel_ports": fab.overlay.tunnel_ports, "warnings": warnings}
    for warning in warnings if not as_json else []:
        click.echo(f"{config}: warning: {warning}", err=True)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"{config}: fabric {fab.name!r} is valid: {len(fab.hosts)} hosts, "
               f"{len(fab.subnets)} virtual subnets, {len(fab.vms)} VMs "
               f"({fab.datapath_type} datapath, {fab.overlay.key_layout} keys, "
               f"{fab.overlay.tunnel_ports} tunnel ports)")


def _print_changes(lines: list[str], notes: tuple[str, ...], sign: str) -> None:
    for line in lines:
        click.echo(f"{sign} {line}")
    for note in notes:
        click.echo(f"note: {note}")


@main.command()
@config_option
@host_option
@db_option
@verbose_option
@json_option
@_fail_cleanly
def plan(config: str, host: str | None, db: str | None, verbose: bool, as_json: bool) -> None:
    """Show what `up` would change on this host; changes nothing.

    Exit status 0 whether or not there are changes.
    """
    from ovsnvgre import engine

    fab = _load(config)
    chosen = engine.select_host(fab, host)
    result = engine.plan(fab, chosen, db, progress=_progress(as_json))
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    if result.empty:
        click.echo(f"host {chosen}: no changes: the switch matches the fabric")
    else:
        _print_changes(result.lines(verbose), (), "+")
        click.echo(f"host {chosen}: changes planned")
    for note in result.notes:
        click.echo(f"note: {note}")


DRIFTED = 3


@main.command()
@config_option
@host_option
@db_option
@json_option
@_fail_cleanly
def status(config: str, host: str | None, db: str | None, as_json: bool) -> None:
    """Show this host as it runs, and how it drifted from the fabric.

    Reports the PA and where it sits, each tunnel (peer, VSID, key, port,
    state, BFD), each local VM (port, VSID, MAC, CA, link, MTU, packet
    counters), the flows per table, and MTU warnings. Drift is every
    difference between the switch and the fabric (missing, extra or changed
    rows, flows, ports ovs-vswitchd refused). Changes nothing.

    Exit status: 0 converged, 3 drifted (for monitoring), 1 or 2 on failure.
    """
    from ovsnvgre import engine

    fab = _load(config)
    chosen = engine.select_host(fab, host)
    report = engine.status(fab, chosen, db, _progress(True))
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for line in report.lines():
            click.echo(line)
    if not report.converged:
        sys.exit(DRIFTED)


@main.command()
@config_option
@click.option("--from", "source", required=True, metavar="VM",
              help="The VM the packet comes from (a VM of this host).")
@click.option("--to", "target", required=True, metavar="VM|ADDRESS",
              help="A VM name, or a CA (looked up in the source's virtual subnet first).")
@click.option("--proto", default="icmp", show_default=True, metavar="icmp|arp|tcp:PORT|udp:PORT",
              help="The packet: an echo request, an ARP request for the address, or a "
                   "TCP/UDP packet to PORT.")
@click.option("--host", metavar="NAME",
              help="The host the trace runs on. Default: the source VM's host.")
@db_option
@click.option("--raw", is_flag=True, help="Also print ofproto/trace's full output.")
@json_option
@_fail_cleanly
def trace(config: str, source: str, target: str, proto: str, host: str | None, db: str | None,
          raw: bool, as_json: bool) -> None:
    """Show what the switch does with one packet, in the fabric's terms.

    Builds the packet from the fabric (the VM's port, MAC and CA, the
    destination's MAC when the fabric knows it), runs `ovs-appctl
    ofproto/trace` on the integration bridge, and prints a verdict such as
    "delivered to red-b via tunnel to host2 with key 0x138900", "answered by
    the ARP responder" or "dropped: different virtual subnet". Changes nothing.
    """
    from ovsnvgre import engine

    result = engine.trace(_load(config), source, target, proto, host, db)
    if as_json:
        data = result.as_dict()
        if raw:
            data["raw"] = result.raw
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"flow: {result.probe.flow}")
    if raw:
        click.echo(result.raw.rstrip())
    click.echo(result.verdict)


@main.command()
@config_option
@host_option
@db_option
@timeout_option
@click.option("-v", "--verbose", is_flag=True,
              help="Also log the checks that found nothing to repair.")
@_fail_cleanly
def watch(config: str, host: str | None, db: str | None, timeout: float,
          verbose: bool) -> None:
    """Keep this host converged until stopped (SIGTERM or Ctrl-C).

    Runs `up` at start, then again whenever something changes: an OVSDB row
    it reads (an owned row edited, a VM port appearing), the flows of the
    integration bridge (or ovs-vswitchd restarting and losing them), or the
    fabric file (a new valid file is taken; an invalid one is reported and
    the last good one kept). Logs every repair with what drifted, one line
    each, on stderr. examples/ovsnvgre-watch.service runs it under systemd.
    """
    import time

    from ovsnvgre import watch as watching

    def log(message: str) -> None:
        click.echo(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} ovsnvgre watch: {message}",
                   err=True)

    watching.run(config, host, db, timeout, log, verbose)


@main.command()
@_changing_command
def up(config: str, host: str | None, db: str | None, timeout: float, verify: bool,
       confirm: float | None, verbose: bool, as_json: bool) -> None:
    """Make this host's switch match the fabric.

    Creates the underlay bridge with the tep port holding the PA (moving the
    uplink's addresses and routes to it), the integration bridge, the GRE
    ports to the peers, the VM ports, and the OpenFlow pipeline that gives
    each VM port its tenant and keeps tenants apart. Safe to run again: with
    nothing changed it writes nothing.

    Before changing anything it saves the host's state in
    ovsnvgre-rollback.json in the OVS run directory (`ovsnvgre rollback`
    returns to it after a crash); when the underlay changed it checks the host
    still reaches its network (see --verify) and rolls back by itself if not.
    """
    from ovsnvgre import engine

    fab = _load(config)
    chosen = engine.select_host(fab, host)
    try:
        result = engine.up(fab, chosen, db, timeout, _progress(as_json), verify, confirm)
    except engine.RefusedPorts as exc:
        # The rest was applied: a --confirm run still waits, and rolls back unconfirmed.
        _report(exc.result, chosen, as_json, verbose)
        click.echo(f"ovsnvgre: error: {exc}", err=True)
        _await_confirmation(exc.result, confirm, as_json)
        sys.exit(exc.exit_code)
    _report(result, chosen, as_json, verbose)
    _await_confirmation(result, confirm, as_json)


@main.command()
@_changing_command
def down(config: str, host: str | None, db: str | None, timeout: float, verify: bool,
         confirm: float | None, verbose: bool, as_json: bool) -> None:
    """Remove exactly what ovsnvgre made on this host.

    Deletes the bridges, ports and tunnels that carry this fabric's marker and
    the flows that carry ovsnvgre's cookie, and gives the uplink back the
    addresses and routes `up` moved off it. Rows and flows ovsnvgre did not
    create are never touched. The state before is saved and the underlay
    checked afterwards, as for `up`.
    """
    from ovsnvgre import engine

    fab = _load(config)
    chosen = engine.select_host(fab, host)
    result = engine.down(fab, chosen, db, timeout, _progress(as_json), verify, confirm)
    _report(result, chosen, as_json, verbose, sign="-")
    _await_confirmation(result, confirm, as_json)


def _await_confirmation(result: Any, seconds: float | None, as_json: bool) -> None:
    from ovsnvgre import engine

    if result.timer is None or seconds is None:
        return
    click.echo(f"waiting up to {seconds:g} s for `ovsnvgre confirm` (from another shell); "
               "without it the run is rolled back, even if this command is interrupted",
               err=True)
    try:
        outcome = engine.await_confirmation(result.timer, seconds)
    except KeyboardInterrupt:
        click.echo("ovsnvgre: interrupted; the rollback timer keeps running: "
                   "`ovsnvgre confirm` keeps the change, `ovsnvgre rollback` undoes it now",
                   err=True)
        sys.exit(130)
    if as_json:
        click.echo(json.dumps({"confirmed": outcome.confirmed, "detail": outcome.detail}))
    else:
        click.echo(outcome.detail)
    if not outcome.confirmed:
        sys.exit(1)


@main.command("confirm")
@db_option
@_fail_cleanly
def confirm_command(db: str | None) -> None:
    """Keep the change of a running `up --confirm` (or of a run that crashed).

    Removes the saved state of the run, so that nothing rolls it back.
    """
    from ovsnvgre import engine

    click.echo(engine.confirm(db))


@main.command("rollback")
@db_option
@_fail_cleanly
def rollback_command(db: str | None) -> None:
    """Return the host to the state saved before the last unfinished run.

    Use it after a run was killed or crashed half-way, or to undo a pending
    `up --confirm` at once. Restores the rows ovsnvgre owns, the addresses,
    routes and link states of the uplink and the tep port, and the owned flows.
    Exits 1 when there is nothing to roll back.
    """
    from ovsnvgre import engine

    click.echo(engine.rollback(db, _progress(False)))


@main.group()
def lab() -> None:
    """A whole fabric on this machine, in network namespaces (needs root).

    Each fabric host becomes a namespace with its own ovsdb-server and
    ovs-vswitchd, a router namespace joins the hosts' PA subnets, and each VM
    is a namespace behind a veth with its MAC, CA and an MTU that fits the
    42-byte NVGRE overhead. `lab up` runs the same `ovsnvgre up` on every host
    that a real host runs. Lab traffic never leaves the lab's namespaces.
    """


lab_config_option = click.option(
    "-c", "--config", "config", default=None, type=click.Path(dir_okay=False), metavar="FILE",
    help="The fabric to build (every host needs an `uplink`). Default: the HNV two-host "
         "fabric shipped with ovsnvgre (examples/hnv-two-host.yaml).")


@lab.command("up")
@lab_config_option
@_fail_cleanly
def lab_up(config: str | None) -> None:
    """Build the lab (or converge an existing one) and run `ovsnvgre up` on every host."""
    from ovsnvgre.lab import commands

    topology, outputs = commands.up(config, _progress(False))
    for host, output in zip(topology.hosts, outputs, strict=True):
        for line in output.strip().splitlines():
            click.echo(f"[{host.name}] {line}")
    click.echo(f"lab {topology.prefix} is up: {len(topology.hosts)} hosts, "
               f"{len(topology.vms)} VMs; `ovsnvgre lab check` proves it")
    if len(topology.vms) > 1:
        first, second = topology.vms[0], topology.vms[1:]
        peer = next((vm for vm in second if vm.vsid == first.vsid), second[0])
        click.echo(f"try: ip netns exec {first.netns} ping {peer.ca.ip}")


@lab.command("guests")
@lab_config_option
@click.option("--host", required=True, metavar="NAME", help="The fabric host this machine is.")
@_fail_cleanly
def lab_guests(config: str | None, host: str) -> None:
    """Make this host's VMs of the fabric as network namespaces (for a test host).

    Each VM becomes a namespace holding `eth0` with the fabric's MAC, CA and
    an MTU that fits the NVGRE overhead, behind a veth whose end on this host
    is the VM's port. Run it before `ovsnvgre up` on a machine that has no real
    VMs, like the Vagrant lab's guests.
    """
    from ovsnvgre.lab import commands

    for vm in commands.guests(config, host, _progress(False)):
        click.echo(f"{vm.name}: namespace {vm.netns}, port {vm.port}, {vm.mac}, {vm.ca}")


@lab.command("check")
@lab_config_option
@click.option("--host", default=None, metavar="NAME",
              help="Check from this real host only: ping from its VMs (made by `lab guests`) "
                   "to every VM of the fabric and capture GRE on its uplink.")
@json_option
@_fail_cleanly
def lab_check(config: str | None, host: str | None, as_json: bool) -> None:
    """Ping every VM from every VM, TCP inside each VSID, and check the GRE on the wire.

    Prints expected and observed reachability per pair and exits 1 on any
    mismatch (a pair that should reach and does not, or the other way round, or
    a GRE packet that is not NVGRE with one of the fabric's keys, or a VSID
    shared between hosts whose key never crossed the underlay). With --host it
    runs on one host of a real fabric, like the Vagrant lab's guests; TCP is
    then tried only between that host's own VMs.
    """
    from ovsnvgre.lab import check, commands

    _, result = commands.run_check(config, host)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        for line in check.table(result):
            click.echo(line)
    if not result.ok:
        sys.exit(1)


@lab.command("down")
@lab_config_option
@_fail_cleanly
def lab_down(config: str | None) -> None:
    """Stop the lab's daemons and delete its namespaces and files (only the lab's)."""
    from ovsnvgre.lab import commands

    topology, removed = commands.down(config, _progress(False))
    if removed:
        click.echo(f"lab {topology.prefix} removed: {len(removed)} daemons, namespaces "
                   "and directories")
    else:
        click.echo(f"lab {topology.prefix}: nothing to remove")


def _report(result: Any, host: str, as_json: bool, verbose: bool, sign: str = "+") -> None:
    if as_json:
        data = result.plan.as_dict()
        data.update({"changed": result.changed, "ovsdb_writes": result.ovsdb_writes,
                     "kernel_changes": result.kernel_changes, "flow_mods": result.flow_mods,
                     "refused": result.refused,
                     "underlay_check": result.check.as_dict() if result.check else None})
        click.echo(json.dumps(data, indent=2))
        return
    if not result.changed:
        click.echo(f"host {host}: no changes")
    else:
        _print_changes(result.plan.lines(verbose), (), sign)
        click.echo(f"host {host}: changes applied")
    for note in result.plan.notes:
        click.echo(f"note: {note}")


if __name__ == "__main__":  # pragma: no cover
    main()
