"""Converge, no-op and incremental runs of `ovsnvgre up` at fabric scale, side by side with
the ovs-vsctl floor and the hand-made way, on one private switch (userspace datapath).

    sudo python3 bench/converge.py [--runs 5] [--hand-made-ports 1000]

Prints a table; every ratio is taken against a baseline measured in the same run.
Never part of the test pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).parent.parent))

from fabric_gen import generate, with_extra_vm  # noqa: E402
from ovsenv import Namespace, Switch  # noqa: E402

from ovsnvgre import fabric as fabric_module  # noqa: E402
from ovsnvgre.desired import desired_host  # noqa: E402
from ovsnvgre.pipeline import desired_flows  # noqa: E402

PA = "198.18.0.11/24"


def installed(workdir: Path) -> list[str]:
    """ovsnvgre as a user installs it: the package and its dependencies in a venv of
    their own, byte-compiled by pip, run through its console script.

    A source checkout measures something no host runs: an editable install whose
    modules may be compiled on every start (PYTHONDONTWRITEBYTECODE), and whatever
    .pth files the developer's interpreter loads before any code of ours.
    """
    venv = workdir / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    result = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet",
                             str(Path(__file__).resolve().parent.parent)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit("installing ovsnvgre into the bench's venv failed (use --from-source "
                         f"to measure the checkout instead):\n{result.stderr[-2000:]}")
    return [str(venv / "bin" / "ovsnvgre")]


FROM_SOURCE = [sys.executable, "-m", "ovsnvgre"]


class Bench:
    command = FROM_SOURCE  # how ovsnvgre is started; main() sets it

    def __init__(self, hosts: int, tunnel_ports: str, workdir: Path,
                 text: str | None = None) -> None:
        self.text = text or generate(hosts, tunnel_ports=tunnel_ports)
        self.fabric_path = workdir / f"fabric-{hosts}-{tunnel_ports}.yaml"
        self.fabric_path.write_text(self.text)
        self.extra_path = workdir / f"fabric-{hosts}-{tunnel_ports}-extra.yaml"
        self.extra_path.write_text(with_extra_vm(self.text))
        self.fabric = fabric_module.load(self.fabric_path)
        self.state = desired_host(self.fabric, "h0")
        self.netns = Namespace("b")
        self.switch = Switch(self.netns)
        self.switch.start()
        ns = self.netns.exec
        ns("ip", "link", "add", "eth1", "type", "veth", "peer", "name", "eth1-peer")
        ns("ip", "link", "set", "eth1", "up")
        ns("ip", "link", "set", "eth1-peer", "up")
        ns("ip", "addr", "add", PA, "dev", "eth1")
        for vm in [*self.fabric.vms_on("h0"), *(v for v in fabric_module.load(
                self.extra_path).vms_on("h0") if v.name == "vm-extra")]:
            ns("ip", "link", "add", vm.port, "type", "veth", "peer", "name", f"p{vm.port}"[:15])
            ns("ip", "link", "set", vm.port, "up")

    @property
    def tunnel_ports(self) -> int:
        return sum(p.role == "tunnel" for p in self.state.ports.values())

    def close(self) -> None:
        self.switch.close()
        self.netns.delete()

    def timed(self, *command: str) -> float:
        start = time.perf_counter()
        result = self.netns.exec(*command, env=self.switch.env, check=False, timeout=600)
        elapsed = time.perf_counter() - start
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(command[:4])}...: {result.stderr.strip()[-300:]}")
        return elapsed

    def ovsnvgre(self, command: str, fabric: Path | None = None, *extra: str) -> float:
        # No gateway answers on the bench's veth: the underlay check would (rightly)
        # roll every run back, so the bench measures convergence without it.
        return self.timed(*self.command, command, "-c",
                          str(fabric or self.fabric_path), "--host", "h0", "--no-verify",
                          *extra)

    def reset(self) -> None:
        self.ovsnvgre("down")
        self.netns.exec("ovs-vsctl", "--if-exists", "del-br", "br0", "--", "--if-exists",
                        "del-br", "br-int", env=self.switch.env)

    # --- the baselines ------------------------------------------------------------

    def vsctl_chain(self, may_exist: bool) -> list[str]:
        """One ovs-vsctl transaction that makes the same bridges and ports."""
        flag = ["--may-exist"] if may_exist else []
        args = ["ovs-vsctl"]
        for bridge in self.state.bridges.values():
            args += ["--", *flag, "add-br", bridge.name, "--", "set", "bridge", bridge.name,
                     f"datapath_type={bridge.datapath_type}"]
            args += [f"external_ids:{k}={v}" for k, v in bridge.external_ids.items()]
            if bridge.protocols:
                args.append(f"protocols={','.join(bridge.protocols)}")
            if bridge.fail_mode:
                args.append(f"fail_mode={bridge.fail_mode}")
        for port in self.state.ports.values():
            args += ["--", *flag, "add-port", port.bridge, port.name]
            if port.iface_type or port.options:
                args += ["--", "set", "interface", port.name]
                if port.iface_type:
                    args.append(f"type={port.iface_type}")
                args += [f"options:{k}={v}" for k, v in port.options.items()]
        return args

    def floor_converge(self, flow_file: Path) -> float:
        start = time.perf_counter()
        self.netns.exec(*self.vsctl_chain(False), env=self.switch.env, timeout=600)
        self.netns.exec("ovs-ofctl", "-O", "OpenFlow13", "--bundle", "add-flows", "br-int",
                        str(flow_file), env=self.switch.env, timeout=600)
        return time.perf_counter() - start

    def hand_made(self, ports: int) -> float:
        """One ovs-vsctl per bridge and per port, as a shell script from the notebook does."""
        start = time.perf_counter()
        for bridge in self.state.bridges.values():
            self.netns.exec("ovs-vsctl", "add-br", bridge.name, "--", "set", "bridge",
                            bridge.name, f"datapath_type={bridge.datapath_type}",
                            env=self.switch.env)
        for port in list(self.state.ports.values())[:ports]:
            extra = []
            if port.iface_type:
                extra = ["--", "set", "interface", port.name, f"type={port.iface_type}",
                         *(f"options:{k}={v}" for k, v in port.options.items())]
            self.netns.exec("ovs-vsctl", "add-port", port.bridge, port.name, *extra,
                            env=self.switch.env)
        return time.perf_counter() - start

    # --- counting writes ---------------------------------------------------------------

    def db_versions(self) -> dict[str, str]:
        out = {}
        # Interface rows are left out: ovs-vswitchd itself rewrites their status and
        # statistics every few seconds.  Open_vSwitch.next_cfg counts transactions.
        for table in ("Open_vSwitch", "Bridge", "Port"):
            query = ["Open_vSwitch", {"op": "select", "table": table, "where": [],
                                      "columns": ["_uuid", "_version"]}]
            result = self.netns.exec("ovsdb-client", "transact", self.switch.db,
                                     json.dumps(query), env=self.switch.env).stdout
            for row in json.loads(result)[0]["rows"]:
                out[f"{table}:{row['_uuid'][1]}"] = row["_version"][1]
        return out

    def flow_ages(self) -> dict[str, float]:
        """Each flow (its text without counters) -> seconds since it was installed."""
        out = self.netns.exec("ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-int",
                              env=self.switch.env).stdout
        ages = {}
        for line in out.splitlines()[1:]:
            duration = re.search(r"duration=([\d.]+)s", line)
            key = re.sub(r"(duration|n_packets|n_bytes|idle_age|hard_age)=[^,]*, ?", "", line)
            if duration:
                ages[key.strip()] = float(duration.group(1))
        return ages

    def writes_during(self, action) -> tuple[float, int, int]:
        """(seconds, OVSDB rows written, flows (re)installed) while running action()."""
        rows_before, ages_before = self.db_versions(), self.flow_ages()
        start = time.perf_counter()
        elapsed = action()
        wall = time.perf_counter() - start
        rows_after, ages_after = self.db_versions(), self.flow_ages()
        rows = sum(rows_before.get(k) != v for k, v in rows_after.items()) + \
            len(set(rows_before) - set(rows_after))
        flows = sum(1 for k, age in ages_after.items()
                    if k not in ages_before or age < ages_before[k] + wall - 0.01) + \
            len(set(ages_before) - set(ages_after))
        return elapsed, rows, flows


def median(values: list[float]) -> float:
    return statistics.median(values)


def run(hosts: int, tunnel_ports: str, runs: int, hand_made_ports: int, workdir: Path,
        full: bool) -> dict:
    bench = Bench(hosts, tunnel_ports, workdir)
    try:
        flows = desired_flows(bench.state, set(bench.state.ports))
        flow_file = workdir / "flows.txt"
        flow_file.write_text("\n".join(f.add_line() for f in flows) + "\n")
        converge, floor = [], []
        for _ in range(runs):
            bench.reset()
            converge.append(bench.ovsnvgre("up"))
            bench.reset()
            floor.append(bench.floor_converge(flow_file))
        bench.reset()
        bench.ovsnvgre("up")
        noop, noop_rows, noop_flows, vsctl_rerun = [], 0, 0, []
        for _ in range(runs):  # interleaved, so that a busier moment hits both alike
            seconds, rows, flow_mods = bench.writes_during(lambda: bench.ovsnvgre("up"))
            noop.append(seconds)
            noop_rows, noop_flows = max(noop_rows, rows), max(noop_flows, flow_mods)
            vsctl_rerun.append(bench.timed(*bench.vsctl_chain(True)))
        result = {"hosts": hosts, "mode": tunnel_ports, "tunnel_ports": bench.tunnel_ports,
                  "flows": len(flows), "converge": median(converge), "floor": median(floor),
                  "noop": median(noop), "noop_rows": noop_rows, "noop_flows": noop_flows,
                  "vsctl_rerun": median(vsctl_rerun)}
        if full:
            incremental, inc_rows, inc_flows = [], 0, 0
            for _ in range(runs):
                seconds, rows, flow_mods = bench.writes_during(
                    lambda: bench.ovsnvgre("up", bench.extra_path))
                incremental.append(seconds)
                inc_rows, inc_flows = rows, flow_mods
                bench.ovsnvgre("up")  # back to the fabric without the extra VM
            result.update({"incremental": median(incremental), "incremental_rows": inc_rows,
                           "incremental_flows": inc_flows})
            if hand_made_ports:
                bench.reset()
                result["hand_made"] = bench.hand_made(hand_made_ports)
                result["hand_made_ports"] = hand_made_ports
        return result
    finally:
        bench.close()


def help_time(runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([*Bench.command, "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (median)")
    parser.add_argument("--hand-made-ports", type=int, default=1000,
                        help="ports for the one-process-per-port run (0: skip)")
    parser.add_argument("--from-source", action="store_true",
                        help="run `python -m ovsnvgre` from this checkout instead of "
                             "installing it into a venv first")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ovsnvgre-bench-") as tmp:
        workdir = Path(tmp)
        Bench.command = FROM_SOURCE if args.from_source else installed(workdir)
        # The runs use the fabric cache as a host would, in the bench's own directory.
        os.environ["OVSNVGRE_CACHE_DIR"] = str(workdir / "fabric-cache")
        results = [run(hosts, "per-vsid", args.runs, 0, workdir, False) for hosts in (2, 11)]
        results.append(run(101, "per-vsid", args.runs, args.hand_made_ports, workdir, True))
        results.append(run(101, "per-peer", args.runs, 0, workdir, False))
        startup = help_time(args.runs)
    started = "python -m ovsnvgre (this checkout)" if args.from_source else \
        "the ovsnvgre console script, installed in a venv"
    if args.json:
        print(json.dumps({"results": results, "help": startup, "started": started}, indent=2))
        return
    print(f"machine: {platform.node()} {platform.machine()}, {platform.python_version()}, "
          f"median of {args.runs} runs, whole-process times of {started}")
    print(f"{'mode':9} {'ports':>5} {'flows':>6} {'up':>7} {'floor':>7} {'ratio':>6} "
          f"{'no-op':>7} {'vsctl':>7} {'ratio':>6} {'writes':>7}")
    for r in results:
        print(f"{r['mode']:9} {r['tunnel_ports']:5d} {r['flows']:6d} {r['converge']:6.2f}s "
              f"{r['floor']:6.2f}s {r['converge'] / r['floor']:5.2f}x {r['noop']:6.2f}s "
              f"{r['vsctl_rerun']:6.2f}s {r['noop'] / r['vsctl_rerun']:5.2f}x "
              f"{r['noop_rows']}+{r['noop_flows']}")
    full = next(r for r in results if "incremental" in r)
    print(f"incremental (one VM added, {full['tunnel_ports']} ports): {full['incremental']:.2f}s "
          f"= {full['incremental'] / full['noop']:.2f}x the no-op; "
          f"{full['incremental_rows']} OVSDB rows and {full['incremental_flows']} flows written")
    if "hand_made" in full:
        print(f"hand-made, one ovs-vsctl per port ({full['hand_made_ports']} ports): "
              f"{full['hand_made']:.1f}s = {full['hand_made'] / full['converge']:.0f}x "
              "ovsnvgre up")
    print(f"ovsnvgre --help: {startup:.3f}s")
    print("writes = OVSDB rows whose _version changed + flows (re)installed, on the no-op run")


if __name__ == "__main__":
    main()
