"""Make a lab topology real: namespaces, veths, one private switch per host.

Every namespace carries the lab's prefix and is recorded in the lab directory's
lab.json before it is made, so that `lab down` removes exactly what the lab
recorded - also after a crash half-way through `lab up` - and nothing else: not
the namespaces of another lab whose prefix starts the same.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from ovsnvgre.errors import SystemFailure
from ovsnvgre.lab import proc
from ovsnvgre.lab.topology import VM_IFNAME, LabHost, LabVm, Topology
from ovsnvgre.model import Fabric
from ovsnvgre.progress import Progress

LAB_ROOT = Path(os.environ.get("OVSNVGRE_LAB_DIR", "/run/ovsnvgre-lab"))
SCHEMAS = ("/usr/share/openvswitch/vswitch.ovsschema",
           "/usr/local/share/openvswitch/vswitch.ovsschema")
DAEMONS = ("ovs-vswitchd", "ovsdb-server")  # stopped in this order



def lab_dir(prefix: str) -> Path:
    """The lab's own directory (pids, databases, captures), under $OVSNVGRE_LAB_DIR."""
    return LAB_ROOT / prefix


def host_dir(prefix: str, host: str) -> Path:
    """A lab host's OVS run directory."""
    return lab_dir(prefix) / host


def host_env(prefix: str, host: str) -> dict[str, str]:
    """The environment of a lab host's OVS tools: its own run directory."""
    directory = str(host_dir(prefix, host))
    return {**os.environ, "OVS_RUNDIR": directory, "OVS_LOGDIR": directory,
            "OVS_DBDIR": directory, "OVS_SYSCONFDIR": directory}


def require_root() -> None:
    """Raise SystemFailure unless running as root."""
    if os.geteuid() != 0:
        raise SystemFailure("the lab needs root (it makes network namespaces): run it with sudo")


def preflight(fabric: Fabric, whole_lab: bool = True) -> None:
    """One clear line for each reason the lab (or, not whole_lab, guests) cannot run here."""
    require_root()
    for tool in ("ovsdb-server", "ovs-vswitchd", "ovsdb-tool", "ovs-vsctl", "ovs-ofctl"):
        if shutil.which(tool) is None:
            raise SystemFailure(f"{tool} not found: install Open vSwitch "
                                "(apt-get install openvswitch-switch)")
    require_tools(("ip", "iproute2"), ("ethtool", "ethtool"))
    if whole_lab:
        require_tools(("ping", "iputils-ping"), ("tcpdump", "tcpdump"))
    no_module = not Path("/sys/module/openvswitch").exists()
    if whole_lab and fabric.datapath_type == "system" and no_module:
        raise SystemFailure(f"{fabric.source}: datapath_type is system but this kernel has no "
                            "openvswitch module; use datapath_type: netdev for the lab")


def require_tools(*tools: tuple[str, str]) -> None:
    """Each (program, Debian package) must be on PATH."""
    for tool, package in tools:
        if shutil.which(tool) is None:
            raise SystemFailure(f"{tool} not found: apt-get install {package}")


def _schema() -> str:
    for path in SCHEMAS:
        if os.path.exists(path):
            return path
    raise SystemFailure("vswitch.ovsschema not found: install openvswitch-switch")


def recorded(prefix: str) -> list[str]:
    """The namespaces the lab ``prefix`` recorded before making them (lab.json)."""
    try:
        state = json.loads((lab_dir(prefix) / "lab.json").read_text())
    except (OSError, ValueError):
        return []
    names = state.get("namespaces", []) if isinstance(state, dict) else []
    return [n for n in names if isinstance(n, str)]


def _record(topology: Topology, fabric_path: str, namespaces: list[str]) -> None:
    """Add ``namespaces`` to the lab's record, before they are made (written whole or not
    at all: a crash leaves the old record or the new one)."""
    directory = lab_dir(topology.prefix)
    directory.mkdir(parents=True, exist_ok=True)
    names = list(dict.fromkeys([*recorded(topology.prefix), *namespaces]))
    state = {"prefix": topology.prefix, "fabric": fabric_path, "namespaces": names,
             "hosts": [h.name for h in topology.hosts]}
    temporary = directory / f".lab.json.{os.getpid()}"
    temporary.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(temporary, directory / "lab.json")


def _claim(topology: Topology, fabric_path: str, wanted: list[str]) -> set[str]:
    """Record the namespaces this lab is about to make; returns those that exist now.

    A namespace of the same name that exists but this lab never recorded is someone
    else's: SystemFailure, before anything is made (`lab down` would delete it).
    """
    existing = proc.namespaces()
    ours = set(recorded(topology.prefix))
    foreign = [name for name in wanted if name in existing and name not in ours]
    if foreign:
        raise SystemFailure(f"namespace {', '.join(foreign)} exists and was not made by lab "
                            f"{topology.prefix}: remove or rename it first")
    _record(topology, fabric_path, [name for name in wanted if name not in existing])
    return existing


def underlay(topology: Topology, fabric_path: str, progress: Progress) -> None:
    """The router and the hosts with their uplinks, PAs and switches - no VM, no `up`."""
    existing = _claim(topology, fabric_path,
                      [topology.router, *(h.netns for h in topology.hosts)])
    progress(f"router {topology.router}")
    _router(topology, topology.router not in existing)
    for host in topology.hosts:
        progress(f"host {host.name}: namespace {host.netns}, ovsdb-server, ovs-vswitchd")
        _host(topology, host, host.netns not in existing)


def guests(topology: Topology, host: str, host_netns: str | None, progress: Progress,
           fabric_path: str) -> list[LabVm]:
    """The VMs of one host as namespaces behind veths in ``host_netns`` (None: here)."""
    vms = [vm for vm in topology.vms if vm.host == host]
    existing = _claim(topology, fabric_path, [vm.netns for vm in vms])
    for vm in vms:
        progress(f"vm {vm.name} on {vm.host}: namespace {vm.netns}")
        _vm(vm, host_netns, vm.netns not in existing)
    return vms


def up(topology: Topology, fabric_path: str, progress: Progress,
       prepare: Callable[[], object] = lambda: None,
       gateway_hosts: frozenset[str] = frozenset()) -> list[str]:
    """Build (or converge) the lab and run `ovsnvgre up` on every host; returns their output.

    ``prepare`` runs once the hosts and VMs are there, before any `up` (the outside of
    external gateways); a host of ``gateway_hosts`` runs `up` in its network namespace
    only (`nsenter --net`), as the namespaces it makes must outlive the run."""
    underlay(topology, fabric_path, progress)
    for host in topology.hosts:
        guests(topology, host.name, host.netns, progress, fabric_path)
    prepare()
    outputs = []
    for host in topology.hosts:
        progress(f"ovsnvgre up on {host.name}")
        # Isolated (-I: no cwd, no PYTHONPATH on sys.path) and from /: root runs the
        # ovsnvgre installed with this interpreter, never a package where it stands.
        enter = ["nsenter", f"--net=/run/netns/{host.netns}", "--"] \
            if host.name in gateway_hosts else []
        result = proc.run(*enter, sys.executable, "-I", "-m", "ovsnvgre", "up", "-c", fabric_path,
                          "--host", host.name, netns=None if enter else host.netns, cwd="/",
                          env=host_env(topology.prefix, host.name), check=False, timeout=180)
        if result.returncode != 0:
            reason = (result.stderr.strip().splitlines() or ["failed"])[-1]
            raise SystemFailure(f"ovsnvgre up on lab host {host.name} failed: {reason}")
        outputs.append(result.stdout)
    return outputs


def _router(topology: Topology, fresh: bool) -> None:
    router = topology.router
    if fresh:
        proc.run("ip", "netns", "add", router)
        proc.run("ip", "-n", router, "link", "set", "lo", "up")
        proc.run("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=router)
    for subnet in topology.pa_subnets:
        if not proc.link_exists(router, subnet.bridge):
            proc.run("ip", "-n", router, "link", "add", subnet.bridge, "type", "bridge")
        proc.run("ip", "-n", router, "link", "set", subnet.bridge, "up")
        for gateway in subnet.gateways:
            proc.run("ip", "-n", router, "addr", "replace", str(gateway), "dev", subnet.bridge)


def _host(topology: Topology, host: LabHost, fresh: bool) -> None:
    router = topology.router
    if fresh:
        proc.run("ip", "netns", "add", host.netns)
        proc.run("ip", "-n", host.netns, "link", "set", "lo", "up")
    if not proc.link_exists(host.netns, host.uplink):
        proc.run("ip", "-n", host.netns, "link", "add", host.uplink, "type", "veth", "peer",
                 "name", host.router_port, "netns", router)
        bridge = next(s.bridge for s in topology.pa_subnets if s.network == host.pa_subnet)
        proc.run("ip", "-n", router, "link", "set", host.router_port, "master", bridge, "up")
        proc.run("ip", "-n", host.netns, "link", "set", host.uplink, "up")
        # The PA starts on the uplink NIC, as on a real machine; `ovsnvgre up` moves it.
        proc.run("ip", "-n", host.netns, "addr", "add", str(host.pa), "dev", host.uplink)
        if host.gateway is not None:
            proc.run("ip", "-n", host.netns, "route", "add", "default", "via",
                     str(host.gateway))
    _start_switch(topology.prefix, host)


def _start_switch(prefix: str, host: LabHost) -> None:
    directory = host_dir(prefix, host.name)
    directory.mkdir(parents=True, exist_ok=True)
    env = host_env(prefix, host.name)
    db = f"unix:{directory}/db.sock"
    if not _running(directory, "ovsdb-server"):
        if not (directory / "conf.db").exists():
            proc.run("ovsdb-tool", "create", str(directory / "conf.db"), _schema(), env=env)
        proc.run("ovsdb-server", str(directory / "conf.db"), f"--remote=punix:{directory}/db.sock",
                 f"--pidfile={directory}/ovsdb-server.pid",
                 f"--log-file={directory}/ovsdb-server.log", "--detach", "--no-chdir", env=env)
        proc.run("ovs-vsctl", f"--db={db}", "--no-wait", "init", env=env)
    if not _running(directory, "ovs-vswitchd"):
        proc.run("ovs-vswitchd", db, f"--pidfile={directory}/ovs-vswitchd.pid",
                 f"--log-file={directory}/ovs-vswitchd.log", "--detach", "--no-chdir",
                 netns=host.netns, env=env)


def _pid(directory: Path, daemon: str) -> int | None:
    try:
        return int((directory / f"{daemon}.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _running(directory: Path, daemon: str) -> bool:
    pid = _pid(directory, daemon)
    return pid is not None and proc.pid_alive(pid)


def _vm(vm: LabVm, host_ns: str | None, fresh: bool) -> None:
    on_host = ["-n", host_ns] if host_ns else []
    if fresh:
        proc.run("ip", "netns", "add", vm.netns)
        proc.run("ip", "-n", vm.netns, "link", "set", "lo", "up")
    if proc.run("ip", *on_host, "link", "show", vm.port, check=False).returncode != 0:
        proc.run("ip", *on_host, "link", "add", vm.port, "type", "veth", "peer", "name",
                 VM_IFNAME, "netns", vm.netns)
        proc.run("ip", "-n", vm.netns, "link", "set", VM_IFNAME, "address", vm.mac,
                 "mtu", str(vm.mtu))
        proc.run("ip", "-n", vm.netns, "addr", "add", str(vm.ca), "dev", VM_IFNAME)
        # Transmit checksum offload left on makes TCP fail through the userspace
        # datapath while ping works.
        proc.run("ethtool", "-K", VM_IFNAME, "tx", "off", netns=vm.netns)
        proc.run("ip", "-n", vm.netns, "link", "set", VM_IFNAME, "up")
        # The host end gets the VM's MTU too, as a hypervisor's tap would.
        proc.run("ip", *on_host, "link", "set", vm.port, "mtu", str(vm.mtu), "up")
    if vm.gateway is not None:
        # A VM of a routed subnet reaches the other subnets of its routing domain through
        # the distributed router, its subnet's gateway (as a DHCP server would tell it).
        proc.run("ip", "-n", vm.netns, "route", "replace", "default", "via", str(vm.gateway),
                 "dev", VM_IFNAME)


def down(prefix: str, progress: Progress) -> list[str]:
    """Stop the lab's daemons by pid, delete the namespaces it recorded and its files;
    returns what went.  Another lab's namespaces are never touched, even when their
    names start with this lab's prefix (fabric `abc` is nv-abc, `abc_` nv-abc-<crc>)."""
    directory = lab_dir(prefix)
    removed: list[str] = []
    ours = set(recorded(prefix))
    if directory.exists():
        for host in sorted(p for p in directory.iterdir() if p.is_dir()):
            for daemon in DAEMONS:
                pid = _pid(host, daemon)
                if pid is not None and proc.pid_alive(pid) and _is_daemon(pid, daemon):
                    progress(f"stopping {daemon} of {host.name} (pid {pid})")
                    proc.stop(pid)
                    removed.append(f"{daemon} {pid}")
    for netns in sorted(proc.namespaces()):
        if netns in ours and netns.startswith(f"{prefix}-"):
            progress(f"deleting namespace {netns}")
            proc.run("ip", "netns", "delete", netns, check=False)
            removed.append(netns)
    if directory.exists():
        shutil.rmtree(directory)
        removed.append(str(directory))
    return removed


def _is_daemon(pid: int, daemon: str) -> bool:
    """Never signal a pid that a stale pidfile now gives to another program."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip().startswith(daemon[:15])
    except OSError:
        return False
