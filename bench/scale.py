"""Data-centre scale: `ovsnvgre` on a 1,000-host fabric of 20 VMs per host, against the
floor, on one private switch (userspace datapath).  Figures, never pass/fail.

    sudo python3 bench/scale.py [--hosts 1000] [--modes per-peer,per-vsid] [--runs 3]

The measured host ``h0`` has 20 VMs, one in each of the 20 VSIDs, so it shares VSIDs
with every peer; each peer has 20 VMs in 10 of them (fabric_gen.generate, 25 hosts per
PA /24).  Per mode, medians of ``--runs``:

- ``validate`` of the file, cold (no fabric cache: parse and check) and warm (cached);
- ``up`` from empty, interleaved with the floor: one chained ``ovs-vsctl`` of the same
  bridges and ports and one ``ovs-ofctl --bundle add-flows`` of the same flows;
- the no-op ``up``, interleaved with the hand-made re-run: the chained ``ovs-vsctl``
  with ``--may-exist`` and ``ovs-ofctl --bundle replace-flows`` of the same flows;
- ``up`` of the same fabric with one VM added on ``h0`` (then back);
- the peak RSS of each ovsnvgre process (GNU time's %M).

Every run is a whole process, as a host runs it (`--from-source`: `python -m ovsnvgre`
from this checkout; default: installed into a venv of the bench's own, as converge.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).parent.parent))
sys.path.insert(0, str(Path(__file__).parent))

from converge import FROM_SOURCE, Bench, installed  # noqa: E402
from fabric_gen import generate  # noqa: E402

from ovsnvgre.pipeline import desired_flows  # noqa: E402


class ScaleBench(Bench):
    """converge.Bench that also records each ovsnvgre process's peak RSS (KiB)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rss_file = Path(self.switch.rundir) / "rss"
        self.last_rss = 0

    def ovsnvgre(self, command: str, fabric: Path | None = None, *extra: str) -> float:
        """One whole `ovsnvgre up|down` process (seconds); its peak RSS in last_rss."""
        seconds = self.timed("/usr/bin/time", "-f", "%M", "-o", str(self.rss_file),
                             *self.command, command, "-c", str(fabric or self.fabric_path),
                             "--host", "h0", "--no-verify", *extra)
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

    def replace_flows(self, flow_file: Path) -> float:
        """The hand-made flow re-run: `ovs-ofctl --bundle replace-flows` of the same flows."""
        return self.timed("ovs-ofctl", "-O", "OpenFlow13", "--bundle", "replace-flows",
                          "br-int", str(flow_file))


def median(values: list[float]) -> float:
    return statistics.median(values)


def run(hosts: int, mode: str, runs: int, workdir: Path) -> dict:
    text = generate(hosts, vsids=20, local_vms=20, vms_per_peer=20, shared_per_peer=10,
                    tunnel_ports=mode, hosts_per_subnet=25)
    bench = ScaleBench(hosts, mode, workdir, text=text)
    try:
        flows = desired_flows(bench.state, set(bench.state.ports))
        flow_file = workdir / f"flows-{mode}.txt"
        # A file of plain flows (no add keyword) serves add-flows and replace-flows alike.
        flow_file.write_text("\n".join(f.add_line().removeprefix("add ") for f in flows)
                             + "\n")
        result: dict = {"hosts": hosts, "mode": mode, "vms": len(bench.fabric.vms),
                        "ports": len(bench.state.ports), "flows": len(flows),
                        "tunnel_ports": sum(p.role in ("tunnel", "tunnel-receive")
                                            for p in bench.state.ports.values())}
        cold, warm = [], []
        for _ in range(runs):
            seconds, result["validate_rss"] = bench.validate(cached=False)
            cold.append(seconds)
            warm.append(bench.validate(cached=True)[0])
        result.update(validate_cold=median(cold), validate_warm=median(warm))

        converge, floor, up_rss = [], [], 0
        for _ in range(runs):
            bench.reset()
            converge.append(bench.ovsnvgre("up"))
            up_rss = max(up_rss, bench.last_rss)
            bench.reset()
            floor.append(bench.floor_converge(flow_file))
        result.update(up=median(converge), floor=median(floor), up_rss=up_rss)

        bench.reset()
        bench.ovsnvgre("up")
        noop, hand, noop_rss, noop_rows, noop_flows = [], [], 0, 0, 0
        for _ in range(runs):  # interleaved, so that a busier moment hits both alike
            seconds, rows, flow_mods = bench.writes_during(lambda: bench.ovsnvgre("up"))
            noop.append(seconds)
            noop_rss = max(noop_rss, bench.last_rss)
            noop_rows, noop_flows = max(noop_rows, rows), max(noop_flows, flow_mods)
            start = time.perf_counter()
            bench.timed(*bench.vsctl_chain(True))
            bench.replace_flows(flow_file)
            hand.append(time.perf_counter() - start)
        result.update(noop=median(noop), hand_rerun=median(hand), noop_rss=noop_rss,
                      noop_rows=noop_rows, noop_flows=noop_flows)

        added, add_rss, add_rows, add_flows = [], 0, 0, 0
        for _ in range(runs):
            seconds, add_rows, add_flows = bench.writes_during(
                lambda: bench.ovsnvgre("up", bench.extra_path))
            added.append(seconds)
            add_rss = max(add_rss, bench.last_rss)
            bench.ovsnvgre("up")  # back to the fabric without the extra VM
        result.update(one_vm=median(added), one_vm_rss=add_rss, one_vm_rows=add_rows,
                      one_vm_flows=add_flows)
        return result
    finally:
        bench.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--modes", default="per-peer",
                        help="comma-separated tunnel modes (per-peer, per-vsid)")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--from-source", action="store_true",
                        help="run `python -m ovsnvgre` from this checkout")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ovsnvgre-scale-") as tmp:
        workdir = Path(tmp)
        Bench.command = FROM_SOURCE if args.from_source else installed(workdir)
        os.environ["OVSNVGRE_CACHE_DIR"] = str(workdir / "fabric-cache")
        results = []
        for mode in args.modes.split(","):
            started = time.perf_counter()
            results.append(run(args.hosts, mode, args.runs, workdir))
            results[-1]["bench_seconds"] = round(time.perf_counter() - started, 1)
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps({"results": results}, indent=2))
        return
    print(f"machine: {platform.node()} {platform.machine()}, {platform.python_version()}, "
          f"median of {args.runs}, whole-process times")
    for r in results:
        print(f"{r['mode']}: {r['hosts']} hosts, {r['vms']} VMs, {r['tunnel_ports']} tunnel "
              f"ports, {r['flows']} flows on h0")
        print(f"  validate  cold {r['validate_cold']:.2f}s warm {r['validate_warm']:.2f}s "
              f"(peak RSS {r['validate_rss'] / 1024:.0f} MiB)")
        print(f"  up        {r['up']:.2f}s  floor {r['floor']:.2f}s  "
              f"= {r['up'] / r['floor']:.2f}x  (peak RSS {r['up_rss'] / 1024:.0f} MiB)")
        print(f"  no-op     {r['noop']:.2f}s  hand-made re-run {r['hand_rerun']:.2f}s  "
              f"= {r['noop'] / r['hand_rerun']:.2f}x  ({r['noop_rows']} rows + "
              f"{r['noop_flows']} flows written; peak RSS {r['noop_rss'] / 1024:.0f} MiB)")
        print(f"  one VM    {r['one_vm']:.2f}s  ({r['one_vm_rows']} rows + {r['one_vm_flows']} "
              f"flows written; peak RSS {r['one_vm_rss'] / 1024:.0f} MiB)")


if __name__ == "__main__":
    main()
