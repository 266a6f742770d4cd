"""Data-centre scale: `ovsnvgre` on fabrics of 1,000 or 5,000 hosts of 20 VMs each,
against the floor, on one private switch (userspace datapath).  Figures, never pass/fail.

    sudo python3 bench/scale.py [--hosts 100,1000] [--modes per-peer,per-vsid] [--runs 3]

The measured host ``h0`` has 20 VMs, one in each of the 20 VSIDs, so it shares VSIDs
with every peer; each peer has 20 VMs in 10 of them (fabric_gen.generate, 25 hosts per
PA /24).  Per number of hosts and tunnel mode (any mode the fabric accepts), medians of
``--runs``:

- ``validate`` of the file, cold (no fabric cache: parse and check) and warm (cached);
- ``up`` from empty, interleaved with the floor: one chained ``ovs-vsctl`` of the same
  bridges and ports and one ``ovs-ofctl --bundle add-flows`` of the same flows; and with
  the transaction floor: the same rows as one plain OVSDB transaction sent by this
  process, then the same bundle (what ovsdb-server and ovs-vswitchd cost, whatever the
  client: ovs-vsctl's own CPU grows with the square of a chain's commands, so above
  ``--vsctl-limit`` ports the chained ovs-vsctl is not run at all);
- the no-op ``up``, interleaved with the hand-made re-run: the chained ``ovs-vsctl``
  with ``--may-exist`` and ``ovs-ofctl --bundle replace-flows`` of the same flows; and
  with ``replace-flows`` alone;
- ``up`` of the same fabric with one VM added on ``h0`` (then back);
- the peak RSS of each ovsnvgre process (GNU time's %M), and the machine's load
  average while the figures were taken (the bench shares its cores).

"The same flows" are the flows ovsnvgre's first ``up`` installed, as the switch dumps
them, so the baselines build exactly the end state of the ovsnvgre under test.  "From
empty" is a fresh ovsdb-server and ovs-vswitchd each time (the PA back on the uplink):
removing 11,000 ports from a running ovs-vswitchd takes it minutes, as each port it
deletes copies the translation state of every port left (ofproto-dpif's
``xlate_txn_start`` in ``port_destruct`` and ``bundle_destroy``), which a bench that
reset by ``down`` would measure instead of the next ``up``.

Every run is a whole process, as a host runs it (`--from-source`: `python -m ovsnvgre`
from the current directory or the interpreter's install; default: installed into a
venv of the bench's own, as converge.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).parent.parent))
sys.path.insert(0, str(Path(__file__).parent))

from converge import FROM_SOURCE, PA, Bench, installed  # noqa: E402
from fabric_gen import generate  # noqa: E402
from ovsenv import Switch  # noqa: E402

from ovsnvgre.desired import BridgeSpec, PortSpec  # noqa: E402
from ovsnvgre.lab.proc import stop  # noqa: E402
from ovsnvgre.ovsdb.select import RawClient  # noqa: E402
from ovsnvgre.pipeline import COOKIE  # noqa: E402

# Above this many ports the chained ovs-vsctl (floor and hand-made re-run) is not run:
# its own CPU grows faster than the square of the commands in the chain (measured here:
# 1,000 ports 0.44 s, 2,000 ports 2.0 s, 4,000 ports 10.8 s; 11,000 ports 607 s).
VSCTL_LIMIT = 3000


def _map(pairs: dict[str, str]) -> list:
    return ["map", sorted([key, value] for key, value in pairs.items())]


def insert_operations(bridges: list[BridgeSpec], ports: list[PortSpec]) -> list[dict]:
    """The RFC 7047 operations of one transaction that makes ``bridges`` (each with its
    local internal port) and ``ports``, then increments ``next_cfg`` and reads it back:
    the transaction floor's rows, with no client library in the way.  (ovsnvgre itself
    writes through ovsdbapp.)"""
    operations: list[dict] = [{"op": "comment", "comment": "ovsnvgre bench floor"}]
    members: dict[str, list] = {bridge.name: [] for bridge in bridges}

    def port(name: str, kind: str, options: dict[str, str], ids: dict[str, str],
             spec: PortSpec | None = None) -> list:
        iface: dict = {"name": name, "type": kind, "options": _map(options),
                       "external_ids": _map(ids)}
        if spec is not None and spec.bfd:
            iface["bfd"] = _map(spec.bfd)
        if spec is not None and spec.mtu_request is not None:
            iface["mtu_request"] = spec.mtu_request
        if spec is not None and spec.mac is not None:
            iface["mac"] = spec.mac
        serial = len(operations)
        operations.append({"op": "insert", "table": "Interface", "row": iface,
                           "uuid-name": f"i{serial}"})
        operations.append({"op": "insert", "table": "Port", "uuid-name": f"p{serial}",
                           "row": {"name": name, "interfaces": ["named-uuid", f"i{serial}"],
                                   "external_ids": _map(ids)}})
        return ["named-uuid", f"p{serial}"]

    for bridge in bridges:
        members[bridge.name].append(port(bridge.name, "internal", {}, bridge.external_ids))
    for spec in ports:
        members[spec.bridge].append(port(spec.name, spec.iface_type, spec.options,
                                         spec.external_ids, spec))
    for index, bridge in enumerate(bridges):
        operations.append({"op": "insert", "table": "Bridge", "uuid-name": f"b{index}",
                           "row": {"name": bridge.name, "ports": ["set", members[bridge.name]],
                                   "datapath_type": bridge.datapath_type,
                                   "protocols": ["set", list(bridge.protocols)],
                                   "fail_mode": ["set", [bridge.fail_mode]
                                                 if bridge.fail_mode else []],
                                   "external_ids": _map(bridge.external_ids)}})
    added = [["named-uuid", f"b{index}"] for index in range(len(bridges))]
    operations.append({"op": "mutate", "table": "Open_vSwitch", "where": [],
                       "mutations": [["bridges", "insert", ["set", added]],
                                     ["next_cfg", "+=", 1]]})
    operations.append({"op": "select", "table": "Open_vSwitch", "where": [],
                       "columns": ["next_cfg"]})
    return operations


def plain_transaction(db: str, bridges: list[BridgeSpec], ports: list[PortSpec],
                      timeout: float) -> None:
    """``insert_operations`` sent as one transaction, then an RFC 7047 "wait" until
    ovs-vswitchd has applied it (``cur_cfg`` reaches the new ``next_cfg``)."""
    client = RawClient(db, 5.0)
    try:
        results = client.transact(insert_operations(bridges, ports), timeout=timeout)
        next_cfg = results[-1]["rows"][0]["next_cfg"]
        client.transact([{"op": "wait", "timeout": int(timeout * 1000),
                          "table": "Open_vSwitch", "where": [["cur_cfg", "<", next_cfg]],
                          "columns": ["cur_cfg"], "until": "==", "rows": []}],
                        timeout=timeout + 5)
    finally:
        client.close()


class ScaleBench(Bench):
    """converge.Bench that records each ovsnvgre process's peak RSS (KiB), starts
    every run from empty with a fresh switch, and takes its flows from the switch."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rss_dir = Path(tempfile.mkdtemp(prefix="ovsnvgre-scale-rss-"))
        self.rss_file = self.rss_dir / "rss"
        self.last_rss = 0
        self.loads: list[float] = []

    def close(self) -> None:
        super().close()
        self.rss_file.unlink(missing_ok=True)
        self.rss_dir.rmdir()

    def sample_load(self) -> None:
        """The 1-minute load average now (the machine's cores are shared)."""
        self.loads.append(os.getloadavg()[0])

    def ovsnvgre(self, command: str, fabric: Path | None = None, *extra: str) -> float:
        """One whole `ovsnvgre up|down` process (seconds); its peak RSS in last_rss."""
        self.sample_load()
        seconds = self.timed("/usr/bin/time", "-f", "%M", "-o", str(self.rss_file),
                             *self.command, command, "-c", str(fabric or self.fabric_path),
                             "--host", "h0", "--no-verify", "--timeout", "600", *extra)
        self.last_rss = int(self.rss_file.read_text().split()[-1])
        return seconds

    def validate(self, cached: bool) -> tuple[float, int]:
        """(seconds, peak RSS KiB) of `ovsnvgre validate`, with or without the cache."""
        env = dict(self.switch.env)
        if not cached:
            env["OVSNVGRE_NO_CACHE"] = "1"
        start = time.perf_counter()
        self.netns.exec("/usr/bin/time", "-f", "%M", "-o", str(self.rss_file), *self.command,
                        "validate", "-c", str(self.fabric_path), env=env, timeout=600)
        elapsed = time.perf_counter() - start
        return elapsed, int(self.rss_file.read_text().split()[-1])

    def reset(self) -> None:
        """A fresh, empty switch, and the PA back on the uplink as before any `up`."""
        old = self.switch
        # SIGKILL: on SIGTERM ovs-vswitchd would delete every port, one quadratic step
        # at a time (see the module's docstring).
        old.stop_vswitchd(signal.SIGKILL)
        for pid in list(old.pids):
            stop(pid)
        old.pids.clear()
        old.close()
        self.switch = Switch(self.netns)
        self.switch.start()
        self.netns.exec("ip", "addr", "replace", PA, "dev", "eth1")
        self.netns.exec("ip", "link", "set", "eth1", "up")

    def save_flows(self, path: Path) -> int:
        """The flows ovsnvgre installed, as the switch prints them, into ``path``
        (add-flows and replace-flows read that form); returns how many."""
        out = self.netns.exec("ovs-ofctl", "-O", "OpenFlow13", "--no-stats", "--names",
                              "dump-flows",
                              "br-int", f"cookie={COOKIE:#x}/-1", env=self.switch.env,
                              timeout=600).stdout
        lines = [line for line in out.splitlines() if " actions=" in line]
        path.write_text("\n".join(lines) + "\n")
        return len(lines)

    def floor_converge(self, flow_file: Path) -> float:
        self.sample_load()
        start = time.perf_counter()
        self.netns.exec(*self.vsctl_chain(False), env=self.switch.env, timeout=600)
        self.netns.exec("ovs-ofctl", "-O", "OpenFlow13", "--bundle", "add-flows", "br-int",
                        str(flow_file), env=self.switch.env, timeout=600)
        return time.perf_counter() - start

    def floor_transact(self, flow_file: Path) -> float:
        """The floor without ovs-vsctl: the same bridges and ports as one plain OVSDB
        transaction (``plain_transaction``, sent from this process), waiting for
        ovs-vswitchd to apply it, then one ``ovs-ofctl --bundle add-flows``: what
        ovsdb-server and ovs-vswitchd cost whatever the client."""
        bridges, ports = list(self.state.bridges.values()), list(self.state.ports.values())
        self.sample_load()
        start = time.perf_counter()
        plain_transaction(self.switch.db, bridges, ports, timeout=600)
        self.netns.exec("ovs-ofctl", "-O", "OpenFlow13", "--bundle", "add-flows", "br-int",
                        str(flow_file), env=self.switch.env, timeout=600)
        return time.perf_counter() - start

    def replace_flows(self, flow_file: Path) -> float:
        """The flows' half of the hand-made re-run alone (`ovs-ofctl --bundle
        replace-flows`): a lower bound of any re-run."""
        self.sample_load()
        return self.timed("ovs-ofctl", "-O", "OpenFlow13", "--bundle", "replace-flows",
                          "br-int", str(flow_file))

    def hand_rerun(self, flow_file: Path) -> float:
        """The hand-made re-run: chained `--may-exist` ovs-vsctl, then `ovs-ofctl
        --bundle replace-flows` of the same flows."""
        self.sample_load()
        start = time.perf_counter()
        self.timed(*self.vsctl_chain(True))
        self.timed("ovs-ofctl", "-O", "OpenFlow13", "--bundle", "replace-flows", "br-int",
                   str(flow_file))
        return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)


def run(hosts: int, mode: str, runs: int, workdir: Path, validate: bool,
        vsctl_limit: int = VSCTL_LIMIT) -> dict:
    text = generate(hosts, vsids=20, local_vms=20, vms_per_peer=20, shared_per_peer=10,
                    tunnel_ports=mode, hosts_per_subnet=25)
    bench = ScaleBench(hosts, mode, workdir, text=text)
    try:
        flow_file = workdir / f"flows-{hosts}-{mode}.txt"
        result: dict = {"hosts": hosts, "mode": mode, "vms": len(bench.fabric.vms),
                        "ports": len(bench.state.ports),
                        "tunnel_ports": sum(p.role in ("tunnel", "tunnel-receive")
                                            for p in bench.state.ports.values())}
        if validate:
            cold, warm = [], []
            for _ in range(runs):
                seconds, result["validate_rss"] = bench.validate(cached=False)
                cold.append(seconds)
                warm.append(bench.validate(cached=True)[0])
            result.update(validate_cold=median(cold), validate_warm=median(warm))

        vsctl = len(bench.state.ports) <= vsctl_limit
        converge, floor, floor_txn, up_rss = [], [], [], 0
        for index in range(runs):
            bench.reset()
            converge.append(bench.ovsnvgre("up"))
            up_rss = max(up_rss, bench.last_rss)
            if index == 0:
                result["flows"] = bench.save_flows(flow_file)
            if vsctl:
                bench.reset()
                floor.append(bench.floor_converge(flow_file))
            bench.reset()
            floor_txn.append(bench.floor_transact(flow_file))
        result.update(up=median(converge), floor=median(floor) if floor else None,
                      floor_transact=median(floor_txn), up_rss=up_rss,
                      runs={"up": converge, "floor": floor, "floor_transact": floor_txn})

        bench.reset()
        bench.ovsnvgre("up")
        noop, hand, replace, noop_rss, noop_rows, noop_flows = [], [], [], 0, 0, 0
        for _ in range(runs):  # interleaved, so that a busier moment hits both alike
            seconds, rows, flow_mods = bench.writes_during(lambda: bench.ovsnvgre("up"))
            noop.append(seconds)
            noop_rss = max(noop_rss, bench.last_rss)
            noop_rows, noop_flows = max(noop_rows, rows), max(noop_flows, flow_mods)
            if vsctl:
                hand.append(bench.hand_rerun(flow_file))
            replace.append(bench.replace_flows(flow_file))
        result.update(noop=median(noop), hand_rerun=median(hand) if hand else None,
                      replace_flows=median(replace), noop_rss=noop_rss, noop_rows=noop_rows,
                      noop_flows=noop_flows)
        result["runs"].update(noop=noop, hand_rerun=hand, replace_flows=replace)

        added, add_rss, add_rows, add_flows = [], 0, 0, 0
        for _ in range(runs):
            seconds, add_rows, add_flows = bench.writes_during(
                lambda: bench.ovsnvgre("up", bench.extra_path))
            added.append(seconds)
            add_rss = max(add_rss, bench.last_rss)
            bench.ovsnvgre("up")  # back to the fabric without the extra VM
        result.update(one_vm=median(added), one_vm_rss=add_rss, one_vm_rows=add_rows,
                      one_vm_flows=add_flows)
        result["runs"]["one_vm"] = added
        result["load"] = [round(min(bench.loads), 2), round(median(bench.loads), 2),
                          round(max(bench.loads), 2)]
        return result
    finally:
        bench.close()


def report(r: dict) -> None:
    print(f"{r['mode']}: {r['hosts']} hosts, {r['vms']} VMs, {r['tunnel_ports']} tunnel "
          f"ports, {r['flows']} flows on h0; load average {r['load'][0]}-{r['load'][2]} "
          f"(median {r['load'][1]}) on {os.cpu_count()} cores")
    if "validate_cold" in r:
        print(f"  validate  cold {r['validate_cold']:.2f}s warm {r['validate_warm']:.2f}s "
              f"(peak RSS {r['validate_rss'] / 1024:.0f} MiB)")
    if r["floor"] is not None:
        print(f"  up        {r['up']:.2f}s  floor {r['floor']:.2f}s = {r['up'] / r['floor']:.2f}x"
              f"  (peak RSS {r['up_rss'] / 1024:.0f} MiB)")
    else:
        print(f"  up        {r['up']:.2f}s  floor not run: more than {VSCTL_LIMIT} ports for "
              f"one ovs-vsctl  (peak RSS {r['up_rss'] / 1024:.0f} MiB)")
    print(f"            transaction floor {r['floor_transact']:.2f}s "
          f"= {r['up'] / r['floor_transact']:.2f}x")
    writes = f"{r['noop_rows']} rows + {r['noop_flows']} flows written"
    if r["hand_rerun"] is not None:
        print(f"  no-op     {r['noop']:.2f}s  hand-made re-run {r['hand_rerun']:.2f}s "
              f"= {r['noop'] / r['hand_rerun']:.2f}x  ({writes}; peak RSS "
              f"{r['noop_rss'] / 1024:.0f} MiB)")
    else:
        print(f"  no-op     {r['noop']:.2f}s  hand-made re-run not run ({writes}; peak RSS "
              f"{r['noop_rss'] / 1024:.0f} MiB)")
    print(f"            replace-flows alone {r['replace_flows']:.2f}s "
          f"= {r['noop'] / r['replace_flows']:.2f}x")
    print(f"  one VM    {r['one_vm']:.2f}s  ({r['one_vm_rows']} rows + {r['one_vm_flows']} "
          f"flows written; peak RSS {r['one_vm_rss'] / 1024:.0f} MiB)")


def growth(results: list[dict]) -> None:
    """Per mode, how `up`, the no-op and their baselines grow from the fewest hosts to
    the most."""
    def times(big: dict, small: dict, key: str) -> str:
        if big.get(key) is None or small.get(key) is None:
            return "n/a"
        return f"x{big[key] / small[key]:.1f}"

    for mode in dict.fromkeys(r["mode"] for r in results):
        rows = sorted((r for r in results if r["mode"] == mode), key=lambda r: r["hosts"])
        if len(rows) < 2:
            continue
        small, big = rows[0], rows[-1]
        print(f"{mode}: {small['hosts']} -> {big['hosts']} hosts: up {times(big, small, 'up')} "
              f"(floor {times(big, small, 'floor')}, transaction floor "
              f"{times(big, small, 'floor_transact')}), no-op {times(big, small, 'noop')} "
              f"(hand-made re-run {times(big, small, 'hand_rerun')}, replace-flows "
              f"{times(big, small, 'replace_flows')})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", default="1000",
                        help="comma-separated fabric sizes in hosts (e.g. 100,1000,5000)")
    parser.add_argument("--modes", default="per-peer,per-vsid",
                        help="comma-separated tunnel modes, any the fabric accepts")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--no-validate", action="store_true", help="skip `validate`")
    parser.add_argument("--vsctl-limit", type=int, default=VSCTL_LIMIT,
                        help="most ports for which the chained ovs-vsctl baselines run")
    parser.add_argument("--from-source", action="store_true",
                        help="run `python -m ovsnvgre` with this interpreter")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    # The floor's one ovs-vsctl names every port: 11,000 of them (per-vsid, 1,000 hosts)
    # take ~3 MB of arguments, more than the 2 MB an 8 MiB stack limit allows a command
    # line (Linux: a quarter of RLIMIT_STACK, at most 6 MB).
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or hard >= 1 << 26):
        resource.setrlimit(resource.RLIMIT_STACK, (max(soft, 1 << 26), hard))
    with tempfile.TemporaryDirectory(prefix="ovsnvgre-scale-") as tmp:
        workdir = Path(tmp)
        Bench.command = FROM_SOURCE if args.from_source else installed(workdir)
        os.environ["OVSNVGRE_CACHE_DIR"] = str(workdir / "fabric-cache")
        results = []
        for hosts in (int(h) for h in args.hosts.split(",")):
            for mode in args.modes.split(","):
                started = time.perf_counter()
                results.append(run(hosts, mode, args.runs, workdir, not args.no_validate,
                                   args.vsctl_limit))
                results[-1]["bench_seconds"] = round(time.perf_counter() - started, 1)
                print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps({"results": results}, indent=2))
        return
    print(f"machine: {platform.node()} {platform.machine()}, {platform.python_version()}, "
          f"median of {args.runs}, whole-process times")
    for r in results:
        report(r)
    growth(results)


if __name__ == "__main__":
    main()
