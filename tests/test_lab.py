"""`ovsnvgre lab`: the topology as data, and the real lab built, checked and removed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import needs_switch

from ovsnvgre import fabric
from ovsnvgre.errors import FabricError
from ovsnvgre.lab import builder, commands, expect, topology
from ovsnvgre.lab.commands import default_fabric

EXAMPLES = Path(__file__).parent.parent / "examples"
VENV_OVSNVGRE = str(Path(sys.executable).parent / "ovsnvgre")


def test_default_fabric_is_the_hnv_example():
    assert Path(default_fabric()).read_text() == (EXAMPLES / "hnv-two-host.yaml").read_text()


def test_topology_of_the_hnv_fabric():
    topo = topology.build(fabric.load(default_fabric()))
    assert [s.bridge for s in topo.pa_subnets] == ["sub0", "sub1"]
    assert [str(g) for s in topo.pa_subnets for g in s.gateways] == ["192.168.1.1/24",
                                                                  "192.168.2.1/24"]
    assert {h.netns for h in topo.hosts} == {f"{topo.prefix}-h-host1", f"{topo.prefix}-h-host2"}
    assert all(vm.mtu == 1458 for vm in topo.vms)
    assert all(ns.startswith(topo.prefix + "-") for ns in topo.namespaces)
    probes = expect.matrix(topo)
    assert len(probes) == 12
    assert {(p.source, p.target) for p in probes if p.expected} == {
        ("red-a", "red-b"), ("red-b", "red-a"), ("blue-a", "blue-b"), ("blue-b", "blue-a")}


def test_two_fabrics_get_two_prefixes():
    one = fabric.loads("fabric: alpha\nhosts: {h: {pa: 192.168.1.1/24, uplink: e}}\n")
    two = fabric.loads("fabric: alpha2\nhosts: {h: {pa: 192.168.1.1/24, uplink: e}}\n")
    assert topology.lab_prefix(one) != topology.lab_prefix(two)


def test_hosts_on_one_subnet_share_its_bridge():
    topo = topology.build(fabric.load(EXAMPLES / "four-hosts.yaml"))
    assert len(topo.pa_subnets) == 3
    host3, host4 = (h for h in topo.hosts if h.name in ("host3", "host4"))
    assert host3.pa_subnet == host4.pa_subnet and host3.router_port != host4.router_port


def test_a_host_without_uplink_cannot_be_in_the_lab():
    fab = fabric.loads("fabric: f\nhosts: {h: {pa: 192.168.1.1/24}}\n", "f.yaml")
    with pytest.raises(FabricError, match="hosts.h.uplink"):
        topology.build(fab)


# --- the real lab ---------------------------------------------------------------


class LabRun:
    """`python -m ovsnvgre lab ...` on a copy of a fabric renamed for this test; its labs
    in ``tmp_path``/labs (several LabRuns may share it, each with its own fabric file)."""

    def __init__(self, tmp_path: Path, source: Path, name: str) -> None:
        self.fabric = tmp_path / f"fabric-{name}.yaml"
        text = source.read_text()
        first = text.index("fabric: ")
        end = text.index("\n", first)
        self.fabric.write_text(text[:first] + f"fabric: {name}" + text[end:])
        self.topology = topology.build(fabric.load(self.fabric))
        self.env = {**os.environ, "OVSNVGRE_LAB_DIR": str(tmp_path / "labs")}
        self.lab_dir = tmp_path / "labs" / self.topology.prefix

    def __call__(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        # The console script next to the interpreter, as `sudo .venv/bin/ovsnvgre lab up`:
        # unlike `python -m`, it does not put the working directory on sys.path.
        return subprocess.run([VENV_OVSNVGRE, "lab", *args, "-c", str(self.fabric)],
                              capture_output=True, text=True, env=self.env, timeout=300,
                              cwd=cwd)

    def daemons(self) -> dict[str, int]:
        """The lab's running OVS daemons by pidfile: {"host1/ovsdb-server": pid, ...}."""
        found = {}
        for pidfile in self.lab_dir.glob("*/*.pid"):
            pid = int(pidfile.read_text())
            comm = Path(f"/proc/{pid}/comm")
            if comm.exists() and pidfile.stem.startswith(comm.read_text().strip()):
                found[f"{pidfile.parent.name}/{pidfile.stem}"] = pid
        return found

    def leftovers(self) -> list[str]:
        names = subprocess.run(["ip", "netns", "list"], capture_output=True,
                               text=True).stdout.split()
        left = [n for n in names if n in self.topology.namespaces]
        pids = subprocess.run(["pgrep", "-f", f"{self.lab_dir}/"], capture_output=True,
                              text=True).stdout.split()
        return left + [f"pid {p}" for p in pids] + ([str(self.lab_dir)]
                                                    if self.lab_dir.exists() else [])


@pytest.fixture
def hnv_lab(tmp_path):
    needs_switch()
    run = LabRun(tmp_path, Path(default_fabric()), f"t{os.getpid()}")
    try:
        yield run
    finally:
        run("down")


def test_lab_up_check_rerun_and_down(hnv_lab):
    up = hnv_lab("up")
    assert up.returncode == 0, up.stderr
    assert "is up: 2 hosts, 4 VMs" in up.stdout
    check = hnv_lab("check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "12 probes, 0 mismatches: all green" in check.stdout
    assert "K=1 C=0 S=0 protocol 0x6558: ok" in check.stdout
    data = json.loads(hnv_lab("check", "--json").stdout)
    assert data["ok"] is True and data["wire"]["keys_seen"] == ["0x138900", "0x177100"]
    assert sum(p["observed"] for p in data["probes"]) == 4
    again = hnv_lab("up")
    assert again.returncode == 0, again.stderr
    assert "[host1] host host1: no changes" in again.stdout
    assert "[host2] host host2: no changes" in again.stdout
    down = hnv_lab("down")
    assert down.returncode == 0, down.stderr
    assert hnv_lab.leftovers() == []
    assert "nothing to remove" in hnv_lab("down").stdout


def test_the_lab_switched_to_flow_mode_is_all_green(hnv_lab):
    """The HNV lab up in its own per-vsid mode, then `lab up` with `tunnel_ports: flow`:
    both hosts move to the one flow port in place, and the whole check (ping matrix,
    TCP per VSID, NVGRE on the wire) passes."""
    assert hnv_lab("up").returncode == 0
    hnv_lab.fabric.write_text(hnv_lab.fabric.read_text().replace("tunnel_ports: per-vsid",
                                                                 "tunnel_ports: flow"))
    up = hnv_lab("up")
    assert up.returncode == 0, up.stderr
    for host in ("host1", "host2"):
        assert f"[{host}] + add tunnel-flow port gre-flow to br-int" in up.stdout, up.stdout
        assert f"[{host}] + remove tunnel port g" in up.stdout, up.stdout
    check = hnv_lab("check", "--json")
    assert check.returncode == 0, check.stdout + check.stderr
    data = json.loads(check.stdout)
    assert data["ok"] is True and data["wire"]["keys_seen"] == ["0x138900", "0x177100"]
    assert {(p["source"], p["target"]) for p in data["probes"] if p["observed"]} == {
        ("red-a", "red-b"), ("red-b", "red-a"), ("blue-a", "blue-b"), ("blue-b", "blue-a")}
    assert all(p["tcp"] for p in data["probes"] if p["tcp"] is not None)
    again = hnv_lab("up")
    assert "[host1] host host1: no changes" in again.stdout
    assert "[host2] host host2: no changes" in again.stdout


def test_lab_check_fails_on_a_broken_lab(hnv_lab):
    assert hnv_lab("up").returncode == 0
    # Cut host2 off its router: red-a can no longer reach red-b.
    host2 = next(h for h in hnv_lab.topology.hosts if h.name == "host2")
    subprocess.run(["ip", "-n", hnv_lab.topology.router, "link", "set", host2.router_port,
                    "down"], check=True)
    check = hnv_lab("check")
    assert check.returncode == 1
    assert "MISMATCH" in check.stdout and "FAILED" in check.stdout


def test_lab_down_after_a_crash_half_way_through_up(hnv_lab):
    process = subprocess.Popen([sys.executable, "-m", "ovsnvgre", "lab", "up", "-c",
                                str(hnv_lab.fabric)], env=hnv_lab.env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:  # kill it once the first host's daemons are starting
        if "host host1" in line:
            break
    process.send_signal(signal.SIGKILL)
    process.wait()
    time.sleep(0.5)
    down = hnv_lab("down")
    assert down.returncode == 0, down.stderr
    assert hnv_lab.leftovers() == []


def test_lab_down_leaves_a_lab_whose_prefix_starts_the_same_alone(tmp_path):
    """Fabric `s<pid>` has the prefix nv-s<pid>, fabric `s<pid>_` nv-s<pid>-<crc>: taking
    the first lab down must not touch the second's namespaces or daemons."""
    needs_switch()
    one = LabRun(tmp_path, Path(default_fabric()), f"s{os.getpid()}")
    two = LabRun(tmp_path, Path(default_fabric()), f"s{os.getpid()}_")
    assert two.topology.prefix.startswith(one.topology.prefix + "-")
    try:
        for run in (one, two):
            up = run("up")
            assert up.returncode == 0, up.stderr
        daemons = two.daemons()
        assert len(daemons) == 4  # ovsdb-server and ovs-vswitchd of each host
        down = one("down")
        assert down.returncode == 0, down.stderr
        assert one.leftovers() == []
        names = set(subprocess.run(["ip", "netns", "list"], capture_output=True,
                                   text=True).stdout.split())
        assert set(two.topology.namespaces) <= names
        assert two.daemons() == daemons
        check = two("check")
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        for run in (one, two):
            run("down")
    assert one.leftovers() == [] and two.leftovers() == []


PLANTED = """
import pathlib
pathlib.Path({marker!r}).write_text("imported from the working directory")
raise SystemExit("planted code ran")
"""


def test_the_lab_never_imports_from_the_working_directory(hnv_lab, tmp_path):
    """Root's `lab up` and `lab check` start Python in namespaces: isolated (-I) and from
    /, so an ovsnvgre/ package or a socket.py where the user stands is never imported."""
    planted = tmp_path / "planted"
    (planted / "ovsnvgre").mkdir(parents=True)
    marker = tmp_path / "marker"
    (planted / "ovsnvgre" / "__init__.py").write_text(PLANTED.format(marker=str(marker)))
    (planted / "socket.py").write_text(PLANTED.format(marker=str(marker)))
    up = hnv_lab("up", cwd=planted)
    assert up.returncode == 0, up.stderr
    check = hnv_lab("check", "--json", cwd=planted)
    assert check.returncode == 0, check.stdout + check.stderr
    tcp = [p["tcp"] for p in json.loads(check.stdout)["probes"] if p["tcp"] is not None]
    assert tcp and all(tcp)  # the TCP helpers ran, their `import socket` the real one
    assert not marker.exists()


def test_the_larger_example(tmp_path):
    needs_switch()
    run = LabRun(tmp_path, EXAMPLES / "four-hosts.yaml", f"u{os.getpid()}")
    try:
        assert run("up").returncode == 0
        check = run("check")
        assert check.returncode == 0, check.stdout + check.stderr
        assert "56 probes, 0 mismatches: all green" in check.stdout
    finally:
        assert run("down").returncode == 0
    assert run.leftovers() == []


def test_the_routing_example(tmp_path):
    """examples/routing.yaml's lab: two tenants with overlapping prefixes, routed on the
    source host (one host and across hosts), isolated from each other, gateways answered
    by the router; then the check fails once a routed pair is cut and an isolated
    address answers."""
    needs_switch()
    run = LabRun(tmp_path, EXAMPLES / "routing.yaml", f"r{os.getpid()}")
    try:
        up = run("up")
        assert up.returncode == 0, up.stderr
        check = run("check", "--json")
        assert check.returncode == 0, check.stdout + check.stderr
        report = json.loads(check.stdout)
        probes = {(p["source"], p["target"]): p for p in report["probes"]}
        assert len(probes) == 106
        for pair in [("web-a", "db-b"), ("db-b", "web-a"),  # across hosts, both ways
                     ("web-a", "db-a"), ("stock-b", "shop-b")]:  # on one host
            probe = probes[pair]
            assert probe["outcome"] == "routed" and probe["observed"], probe
            assert probe["answered_by"] == pair[1] and set(probe["ttl"]) == {63}, probe
            assert probe["tcp"] is True, probe
        # 10.1.2.21 seen from Contoso is db-a: Fabrikam's stock-b stays out of reach.
        across = probes["web-a", "stock-b"]
        assert across["outcome"] == "isolated" and not across["observed"]
        assert across["answered_by"] == "db-a" and set(across["ttl"]) == {63}
        assert probes["shop-a", "stock-b"]["answered_by"] == "stock-b"
        # Each gateway of the domain is answered by the router; 10.1.1.1 is flat-a's in flat.
        assert probes["web-b", "gateway of db"]["observed"]  # off-link: no MAC to tell
        assert probes["web-a", "gateway of web"]["answered_by"] == "router"
        assert probes["web-a", "flat-a"]["answered_by"] == "router"
        assert probes["flat-b", "flat-a"]["observed"]
        assert probes["flat-b", "flat-a"]["answered_by"] == "flat-a"
        assert report["wire"]["ok"] and report["wire"]["keys_seen"] == [
            "0x138900", "0x138a00", "0x177100", "0x177200", "0x1b5900"]
        # Cut web-a's default route (a routed pair dropped), and make web-b's address
        # answer flat-b (on its own loopback: the pipeline's anti-spoofing would drop
        # a leak from another VM before it showed).
        vm_ns = {vm.name: vm.netns for vm in run.topology.vms}
        subprocess.run(["ip", "-n", vm_ns["web-a"], "route", "del", "default"], check=True)
        subprocess.run(["ip", "-n", vm_ns["flat-b"], "addr", "add", "10.1.1.11/32", "dev",
                        "lo"], check=True)
        broken = run("check")
        assert broken.returncode == 1
        lines = broken.stdout.splitlines()
        assert any(line.startswith("web-a ") and " db-b " in line and
                   "MISMATCH: no reply" in line for line in lines), broken.stdout
        assert any(line.startswith("flat-b ") and " web-b " in line and
                   "MISMATCH: answered by flat-b, expected no answer" in line
                   for line in lines), broken.stdout
        assert "mismatches: FAILED" in lines[-1]
    finally:
        assert run("down").returncode == 0
    assert run.leftovers() == []


def test_the_routing_example_with_per_peer_ports_and_plain_keys(tmp_path):
    """The other tunnel mode and key layout: one port per peer, the key set by the flow
    (the destination's VSID), and key = VSID on the wire."""
    needs_switch()
    source = tmp_path / "routing-per-peer.yaml"
    source.write_text((EXAMPLES / "routing.yaml").read_text()
                      .replace("tunnel_ports: per-vsid", "tunnel_ports: per-peer")
                      .replace("key_layout: rfc7637", "key_layout: plain"))
    run = LabRun(tmp_path, source, f"p{os.getpid()}")
    try:
        assert run("up").returncode == 0
        check = run("check", "--json")
        assert check.returncode == 0, check.stdout + check.stderr
        report = json.loads(check.stdout)
        assert report["wire"]["keys_seen"] == ["0x1389", "0x138a", "0x1771", "0x1772",
                                               "0x1b59"]
        routed = [p for p in report["probes"] if p["outcome"] == "routed"]
        assert len(routed) == 16 and all(p["observed"] and p["tcp"] for p in routed)
    finally:
        assert run("down").returncode == 0
    assert run.leftovers() == []


DROP_ROOT_THEN_RUN = """
import os, sys
import ovsnvgre.cli, ovsnvgre.lab.cli, ovsnvgre.lab.commands  # imported while readable
os.setgroups([]); os.setgid(65534); os.setuid(65534)
sys.argv = ["ovsnvgre", "lab", "up"]
ovsnvgre.cli.main()
"""


def test_without_root_one_clear_line():
    needs_switch()
    result = subprocess.run([sys.executable, "-c", DROP_ROOT_THEN_RUN],
                            capture_output=True, text=True)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == ("ovsnvgre: error: the lab needs root (it makes network "
                                     "namespaces): run it with sudo")


def test_without_open_vswitch_one_clear_line(tmp_path):
    needs_switch()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    result = subprocess.run([sys.executable, "-m", "ovsnvgre", "lab", "up"],
                            capture_output=True, text=True,
                            env={**os.environ, "PATH": str(bin_dir)})
    assert result.returncode == 1
    assert result.stderr.strip() == ("ovsnvgre: error: ovsdb-server not found: install Open "
                                     "vSwitch (apt-get install openvswitch-switch)")


# --- Vagrant: what can be checked without booting VMs -----------------------------


def test_vagrantfile_parses():
    if shutil.which("ruby") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run every test, but ruby is not installed")
        pytest.skip("ruby not installed (apt-get install ruby)")
    result = subprocess.run(["ruby", "-c", str(EXAMPLES.parent / "Vagrantfile")],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "Syntax OK" in result.stdout, result.stderr


def test_readme_vagrant_section_is_what_the_vagrant_test_runs():
    script = (EXAMPLES.parent / "vagrant" / "test.sh").read_text()
    scenario = script[script.index("# >>> scenario"):script.index("# <<< scenario")]
    scenario = scenario.split("\n", 1)[1]
    readme = (EXAMPLES.parent / "README.md").read_text()
    shown = readme[readme.index("<!-- vagrant-scenario:begin -->"):
                   readme.index("<!-- vagrant-scenario:end -->")]
    assert shown.split("```sh\n", 1)[1].rsplit("```", 1)[0] == scenario
    assert "vagrant up" in scenario and "vagrant destroy -f" in scenario


@pytest.mark.parametrize("script", ["build-box.sh", "host.sh", "test.sh"])
def test_vagrant_scripts_parse(script):
    result = subprocess.run(["bash", "-n", str(EXAMPLES.parent / "vagrant" / script)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_vagrant_fabric_validates():
    fab = fabric.load(EXAMPLES / "vagrant.yaml")
    assert fab.datapath_type == "system"  # the guests have the kernel module
    vagrantfile = (EXAMPLES.parent / "Vagrantfile").read_text()
    for host in fab.hosts.values():
        assert f'"{host.name}" => "{host.pa.ip}"' in vagrantfile
    # make vagrant-test moves the lab to flow mode with this second file: the same
    # fabric but for its tunnel ports and a hashed FlowID.
    flow = fabric.load(EXAMPLES / "vagrant-flow.yaml")
    assert flow.overlay.tunnel_ports == "flow" and flow.overlay.flow_id == "hash"
    assert replace(flow, overlay=fab.overlay, source=fab.source) == fab

    def body(name: str) -> list[str]:
        return [line for line in (EXAMPLES / name).read_text().splitlines()
                if not line.startswith("#") and not line.startswith("overlay:")]

    assert body("vagrant-flow.yaml") == body("vagrant.yaml")


def test_provisioning_script_runs_in_lab_hosts(tmp_path, monkeypatch):
    """The script's steps after the package installation, in two lab host namespaces."""
    needs_switch()
    monkeypatch.setattr(builder, "LAB_ROOT", tmp_path / "labs")
    path = tmp_path / "vagrant.yaml"
    # This kernel has no openvswitch module: the same fabric on the userspace datapath.
    path.write_text((EXAMPLES / "vagrant.yaml").read_text()
                    .replace("datapath_type: system", "datapath_type: netdev")
                    .replace("fabric: vagrant", f"fabric: w{os.getpid()}"))
    topo = topology.build(fabric.load(path))
    try:
        builder.underlay(topo, str(path), lambda _: None)

        def env_of(host: str) -> dict[str, str]:
            return {**builder.host_env(topo.prefix, host), "SKIP_INSTALL": "1",
                    "OVSNVGRE": f"{sys.executable} -m ovsnvgre",
                    "OVSNVGRE_LAB_DIR": str(tmp_path / "labs")}

        for host in topo.hosts:
            env = env_of(host.name)
            # nsenter enters the host's network namespace only: `ip netns exec` would
            # also give the script a private mount namespace, where the guests'
            # `ip netns add` could not publish the namespaces it makes.
            result = subprocess.run(["nsenter", f"--net=/run/netns/{host.netns}", "sh",
                                     str(EXAMPLES / "provision.sh"), host.name, str(path)],
                                    capture_output=True, text=True, env=env, timeout=120)
            assert result.returncode == 0, result.stdout + result.stderr
            assert f"provision.sh: host {host.name} is up\n" in result.stdout
        # Provisioning again reports that nothing changed.
        again = subprocess.run(["nsenter", f"--net=/run/netns/{topo.hosts[0].netns}", "sh",
                                str(EXAMPLES / "provision.sh"), "host1", str(path)],
                               capture_output=True, text=True, env=env_of("host1"), timeout=120)
        assert "provision.sh: host host1 is up, no changes" in again.stdout, again.stderr
        # `lab check --host`, as the Vagrant test runs it on each guest.
        outside_seen: dict[str, list[str]] = {}
        for host in topo.hosts:
            check = subprocess.run(["nsenter", f"--net=/run/netns/{host.netns}", sys.executable,
                                    "-m", "ovsnvgre", "lab", "check", "-c", str(path),
                                    "--host", host.name, "--json"],
                                   capture_output=True, text=True, env=env_of(host.name),
                                   timeout=300)
            assert check.returncode == 0, check.stdout + check.stderr
            report = json.loads(check.stdout)
            local = {vm.name for vm in topo.vms if vm.host == host.name}
            assert {p["source"] for p in report["probes"]} == local
            reached = {(p["source"], p["target"]) for p in report["probes"]
                       if p["observed"] and p["outcome"] != "gateway"}
            # Bridged inside each VSID, routed between Red and Green (routing domain
            # `tenant`), Blue L2 only.
            assert reached == {(a.name, b.name) for a in topo.vms for b in topo.vms
                               if a.name in local and a != b and (
                                   a.vsid == b.vsid or a.routing_domain == b.routing_domain
                                   == "tenant")}
            routed = [p for p in report["probes"] if p["outcome"] == "routed"]
            assert routed and all(p["ttl"] and set(p["ttl"]) == {63} for p in routed)
            # Every VSID shared with the other host crossed this host's uplink with its key.
            assert report["wire"]["keys_seen"] == ["0x138900", "0x177100", "0x1b5900"]
            # host2 is the tenant's gateway host: `lab guests` made its eth2 and the
            # outside behind it, whose server the VMs of both hosts reach through it.
            external = report["external"]
            assert external["ok"], external["failures"]
            outside_seen[host.name] = external["lines"]
        assert "ok  red-a reaches 203.0.113.100 over TCP seen as 203.0.113.21 (203.0.113.21)" \
            in outside_seen["host1"]
        assert "ok  green-a reaches 203.0.113.100 over TCP seen as 203.0.113.10 " \
            "(203.0.113.10)" in outside_seen["host1"]
        assert "ok  green-a: 64 KiB echoed by 203.0.113.100 over TCP" in outside_seen["host1"]
        # The outside's own probes run where it is, on host2 only.
        assert not any(line.split("  ", 1)[1].startswith("the outside")
                       for line in outside_seen["host1"])
        assert "ok  the outside pings red-a at its floating IP 203.0.113.21" \
            in outside_seen["host2"]
        assert "ok  the outside reaches green-b over TCP at 203.0.113.22" in outside_seen["host2"]
        assert "ok  the outside, routing 10.0.1.0/24 to 203.0.113.10, does not reach green-a " \
            "at 10.0.1.11" in outside_seen["host2"]
        assert len(outside_seen["host2"]) == 2 * 4 + 3 + 4
    finally:
        # The tenant's namespace `up` made on host2, the outside's server, the lab.
        commands.down(str(path), lambda _: None)
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert topo.prefix not in left and f"ovsnvgre-w{os.getpid()}-" not in left


# --- the Ansible playbook, against the lab ---------------------------------------


def playbook(hnv_lab, tmp_path: Path, *extra: str) -> dict[str, dict[str, bool]]:
    """Run examples/ansible/site.yml on the lab; task name -> host -> changed."""
    ansible = Path(sys.executable).parent / "ansible-playbook"
    env = {**hnv_lab.env, "LC_ALL": "C.UTF-8",
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "0"}
    result = subprocess.run(
        [str(ansible), "-i", str(EXAMPLES / "ansible" / "lab.yml"),
         str(EXAMPLES / "ansible" / "site.yml"),
         "-e", f"ovsnvgre_fabric_src={hnv_lab.fabric}",
         "-e", f"ovsnvgre_lab_dir={tmp_path / 'labs'}",
         "-e", f"ovsnvgre_lab_prefix={hnv_lab.topology.prefix}", *extra],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # Ansible's default output: "TASK [name] ***" then "ok: [host]" / "changed: [host]".
    tasks: dict[str, dict[str, bool]] = {}
    current: dict[str, bool] = {}
    for line in result.stdout.splitlines():
        if line.startswith("TASK ["):
            name = line[len("TASK ["):line.index("]")].split(" : ")[-1]  # "role : task"
            current = tasks.setdefault(name, {})
        elif line.startswith(("ok: [", "changed: [")):
            status, _, rest = line.partition(": [")
            current[rest.split("]")[0]] = status == "changed"
    return tasks


def test_the_ansible_playbook_converges_the_lab(hnv_lab, tmp_path):
    assert shutil.which("ansible-playbook", path=str(Path(sys.executable).parent)), \
        "ansible-core is one of the test extras"
    assert hnv_lab("up").returncode == 0
    # Start from hosts that ovsnvgre has not touched yet.
    for host in hnv_lab.topology.hosts:
        directory = str(tmp_path / "labs" / hnv_lab.topology.prefix / host.name)
        env = {"OVS_RUNDIR": directory, "OVS_LOGDIR": directory, "OVS_DBDIR": directory}
        down = subprocess.run(["ip", "netns", "exec", host.netns, sys.executable, "-m",
                               "ovsnvgre", "down", "-c", str(hnv_lab.fabric), "--host",
                               host.name], env={**env, **hnv_lab.env}, capture_output=True,
                              text=True)
        assert down.returncode == 0, down.stderr
    assert hnv_lab("check").returncode == 1
    # Check mode plans, reports both hosts as changing, and changes nothing.
    checked = playbook(hnv_lab, tmp_path, "--check")
    assert checked["Plan (changes nothing; this is what check mode reports)"] == {
        "host1": True, "host2": True}
    assert "Up" not in checked or checked["Up"] == {}
    assert hnv_lab("check").returncode == 1
    # The real run converges the lab ...
    applied = playbook(hnv_lab, tmp_path)
    assert applied["Up"] == {"host1": True, "host2": True}
    check = hnv_lab("check")
    assert check.returncode == 0, check.stdout
    # ... and a second run changes nothing.
    again = playbook(hnv_lab, tmp_path)
    assert again["Up"] == {"host1": False, "host2": False}
    assert not any(again["Plan (changes nothing; this is what check mode reports)"].values())
    assert not any(again["Copy the fabric file"].values())
