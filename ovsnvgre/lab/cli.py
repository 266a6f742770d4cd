"""`ovsnvgre lab`: a whole fabric on this machine, in network namespaces."""

from __future__ import annotations

import json
import sys

import click

from ovsnvgre.lab import check, commands
from ovsnvgre.options import fail_cleanly, json_option, progress


@click.group()
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
@fail_cleanly
def lab_up(config: str | None) -> None:
    """Build the lab (or converge an existing one) and run `ovsnvgre up` on every host."""
    topology, outputs = commands.up(config, progress(False))
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
@fail_cleanly
def lab_guests(config: str | None, host: str) -> None:
    """Make this host's VMs of the fabric as network namespaces (for a test host).

    Each VM becomes a namespace holding `eth0` with the fabric's MAC, CA and
    an MTU that fits the NVGRE overhead, behind a veth whose end on this host
    is the VM's port. Run it before `ovsnvgre up` on a machine that has no real
    VMs, like the Vagrant lab's guests. On a routing domain's gateway host
    whose external NIC does not exist, it also makes the outside: that NIC as
    a veth into the namespace `<prefix>-outside`, holding the external
    network's next hop and a server on its host 100 (ping, a UDP and TCP "who
    am I", a TCP echo) that keeps running for `lab check --host`.
    """
    vms, served = commands.guests(config, host, progress(False))
    for vm in vms:
        click.echo(f"{vm.name}: namespace {vm.netns}, port {vm.port}, {vm.mac}, {vm.ca}")
    for line in served:
        click.echo(line)


@lab.command("check")
@lab_config_option
@click.option("--host", default=None, metavar="NAME",
              help="Check from this real host only: ping from its VMs (made by `lab guests`) "
                   "to every VM of the fabric and capture GRE on its uplink.")
@json_option
@fail_cleanly
def lab_check(config: str | None, host: str | None, as_json: bool) -> None:
    """Ping every VM from every VM and every gateway, TCP, and check the GRE on the wire.

    What each probe must see comes from the fabric: bridged inside a VSID (reply
    TTL 64), routed between the subnets of one routing domain (TTL 63), the
    gateways answered by the router, isolated otherwise - an isolated address may
    be answered by the VM that holds it in the source's own routing domain, never
    by the target. Every VM runs a whoami TCP service meanwhile, which tells who
    answered; bridged and routed pairs get a 64 KiB TCP echo. Prints one line per
    probe, the underlay and a summary, and exits 1 on any mismatch: a probe that
    saw otherwise, a GRE packet that is not NVGRE with its destination's VSID in
    the key, a frame for a gateway on the underlay, or a key that should have
    crossed and did not. With --host it runs on one host of a real fabric, like
    the Vagrant lab's guests: only that host's VMs run the whoami service and TCP
    (a routed reply from another host is told by its TTL). A fabric with
    external gateways is also checked from the lab's outside namespace: each
    VM's way out (ping, UDP, TCP, seen as its domain's SNAT address or floating
    IP), tenants with the same CA at once, floating IPs from outside, and no CA
    reachable from outside. With --host: this host's VMs' way out to the server
    of the outside `lab guests` made on the gateway host, and, on that host,
    the floating IPs and no CA from outside.
    """
    _, result = commands.run_check(config, host)
    external = commands.external_check(config, host)
    if as_json:
        data = result.as_dict()
        if external is not None:
            data = {**data, "external": external.as_dict(), "ok": result.ok and external.ok}
        click.echo(json.dumps(data, indent=2))
    else:
        for line in check.table(result):
            click.echo(line)
        if external is not None:
            click.echo("external gateways (from the lab's outside namespace):" if host is None
                       else f"external gateways (seen from {host}):")
            for line in external.lines:
                click.echo(f"  {line}")
    if not result.ok or (external is not None and not external.ok):
        sys.exit(1)


@lab.command("down")
@lab_config_option
@fail_cleanly
def lab_down(config: str | None) -> None:
    """Stop the lab's daemons and delete its namespaces and files (only the lab's)."""
    topology, removed = commands.down(config, progress(False))
    if removed:
        click.echo(f"lab {topology.prefix} removed: {len(removed)} daemons, namespaces "
                   "and directories")
    else:
        click.echo(f"lab {topology.prefix}: nothing to remove")
