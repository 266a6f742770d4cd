"""The lab's three commands as library calls: up, check, down."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ovsnvgre import externalhost
from ovsnvgre import fabric as fabric_module
from ovsnvgre.errors import SystemFailure, UsageError
from ovsnvgre.lab import builder, check, outside, outsidehost, topology
from ovsnvgre.lab.builder import Progress
from ovsnvgre.model import Fabric


def default_fabric() -> str:
    """The HNV two-host fabric shipped with ovsnvgre (examples/hnv-two-host.yaml)."""
    return str(resources.files("ovsnvgre.lab") / "hnv-two-host.yaml")


def _load(path: str | None) -> tuple[str, Fabric, topology.Topology]:
    builder.require_root()  # first: nothing else is worth reporting without it
    path = str(Path(path or default_fabric()).resolve())
    fab = fabric_module.load(path)
    return path, fab, topology.build(fab)


def _require_host(fab: Fabric, host: str) -> None:
    if host not in fab.hosts:
        raise UsageError(f"{fab.source}: no host {host!r} in the fabric "
                         f"(hosts: {', '.join(fab.hosts)})")


def up(path: str | None, progress: Progress) -> tuple[topology.Topology, list[str]]:
    """Build the lab of the fabric at ``path`` (default: the HNV two-host one) and run
    `ovsnvgre up` on every host; returns the topology and each host's output.
    Raises SystemFailure (not root, a tool missing, a host's `up` failed)."""
    path, fab, topo = _load(path)
    builder.preflight(fab)
    gateway_hosts = frozenset(host for host, _ in outside.gateways(fab))
    if gateway_hosts:
        builder.require_tools(("nft", "nftables"), ("nsenter", "util-linux"))
    return topo, builder.up(
        topo, path, progress,
        prepare=lambda: outside.build(fab, topo, lambda names: builder._claim(topo, path, names)),
        gateway_hosts=gateway_hosts)


def external_check(path: str | None, host: str | None = None) -> outside.OutsideResult | None:
    """The outside's check of external gateways (issue 19), or None when the fabric has
    none; with ``host``, what one real host sees of the outside `lab guests` made on the
    gateway host (outsidehost.py), None when there is nothing to check from it."""
    _, fab, topo = _load(path)
    if not outside.gateways(fab):
        return None
    if host is not None:
        return outsidehost.check(fab, topo, host)
    if outside.netns(topo) not in builder.proc.namespaces():
        raise SystemFailure(f"the lab {topo.prefix} has no outside namespace "
                            f"{outside.netns(topo)}: run `ovsnvgre lab up` first")
    return outside.check(fab, topo)


def guests(path: str | None, host: str, progress: Progress
           ) -> tuple[list[topology.LabVm], list[str]]:
    """On a real (or Vagrant) host: its VMs of the fabric as namespaces, behind veths here,
    and, on a gateway host without its external NIC, the outside (outsidehost.py); returns
    the VMs and one line per external network served here."""
    path, fab, topo = _load(path)
    _require_host(fab, host)
    builder.preflight(fab, whole_lab=False)
    vms = builder.guests(topo, host, None, progress, path)
    return vms, outsidehost.build(fab, topo, host,
                                  lambda names: builder._claim(topo, path, names))


def run_check(path: str | None,
              host: str | None = None) -> tuple[topology.Topology, check.CheckResult]:
    """The namespaces lab's check; with ``host``, the check of one real host's VMs."""
    _, fab, topo = _load(path)
    if host is not None:
        _require_host(fab, host)
    builder.preflight(fab, whole_lab=host is None)
    if host is not None:  # the whole lab's preflight checks these already
        builder.require_tools(("ping", "iputils-ping"), ("tcpdump", "tcpdump"))
    needed = topo.namespaces if host is None else [vm.netns for vm in topo.vms if vm.host == host]
    missing = [ns for ns in needed if ns not in builder.proc.namespaces()]
    if missing:
        how = "`ovsnvgre lab up`" if host is None else f"`ovsnvgre lab guests --host {host}`"
        where = f"the lab {topo.prefix} is not (fully) up" if host is None else \
            f"host {host} has not all its VMs"
        raise SystemFailure(f"{where}: no namespace {', '.join(missing)}; run {how} first")
    return topo, check.run(fab, topo, host)


def down(path: str | None, progress: Progress) -> tuple[topology.Topology, list[str]]:
    """Remove the lab of the fabric at ``path``: its daemons (by pid), namespaces and
    files, nothing else; returns the topology and what was removed."""
    _, fab, topo = _load(path)
    builder.preflight(fab)
    # The routing domains' namespaces `ovsnvgre up` made on the lab's gateway hosts: in
    # the machine's /run/netns, outside the lab's record.
    for host in topo.hosts:
        _, changes = externalhost.survey(fab, host.name, removing=True)
        for change in changes:
            progress(f"deleting namespace {change.netns}")
        externalhost.apply(changes)
    stopped = outsidehost.stop(topo)  # the outside `lab guests` serves on a real host
    return topo, stopped + builder.down(topo.prefix, progress)
