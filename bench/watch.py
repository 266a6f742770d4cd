"""How fast a running `ovsnvgre watch` applies a one-VM change of the fabric file, at
data-centre scale, on one private switch (userspace datapath).  Figures, never pass/fail.

    sudo python3 bench/watch.py [--hosts 1000] [--modes per-peer,per-vsid] [--runs 5]

The fabric is bench/scale.py's (fabric_gen.generate: 20 VSIDs, 20 VMs per host, the
measured host ``h0`` sharing VSIDs with every peer).  Per mode:

1. ``ovsnvgre up --no-verify`` converges ``h0`` (nothing answers the underlay check on
   the bench's veth; a converged host gives watch's runs nothing to check);
2. ``ovsnvgre watch --verbose`` starts on ``h0``, and the bench waits for its first run;
3. ``--runs`` times: the fabric file is replaced (written beside it, then renamed over
   it, as an editor or a configuration manager does) by the same fabric with one VM more
   on ``h0`` (its port device exists from the start, as a hypervisor makes it), then by
   the original again.  An ``ovs-ofctl monitor`` of the integration bridge timestamps the
   flow events: the time measured is from the rename to the first flow event that names
   the VM's MAC (its flows go in one bundle, so they all arrive together).

Also counted for each change: the flows added, deleted or modified (monitor events),
the OVSDB rows written (Open_vSwitch, Bridge and Port rows whose ``_version`` changed,
as converge.py counts them).

The floor, measured on the same switch before watch starts: the same change by hand,
``ovs-vsctl add-port`` of the VM's port (which waits for ovs-vswitchd, as every
ovsnvgre transaction does) then ``ovs-ofctl --bundle add-flows`` of the flows it
changes, and back (``del-flows``, ``del-port``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).parent.parent))
sys.path.insert(0, str(Path(__file__).parent))

from converge import FROM_SOURCE, Bench, installed  # noqa: E402
from fabric_gen import generate, with_extra_vm  # noqa: E402

from ovsnvgre import fabric as fabric_module  # noqa: E402
from ovsnvgre.desired import desired_host  # noqa: E402
from ovsnvgre.pipeline import desired_flows  # noqa: E402

EXTRA_MAC = "02:ff:00:00:00:01"  # fabric_gen.with_extra_vm's VM
TIMEOUT = 120.0  # seconds to wait for one change to show


class Events:
    """`ovs-ofctl monitor BRIDGE watch:!initial` in the bench's namespace: every flow
    event line with the time it was read (time.monotonic)."""

    def __init__(self, bench: Bench, bridge: str = "br-int") -> None:
        self.lines: list[tuple[float, str]] = []
        self.cond = threading.Condition()
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", bench.netns.name, "ovs-ofctl", "monitor", bridge,
             "watch:!initial"], env=bench.switch.env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self.cond:
                self.lines.append((time.monotonic(), line.rstrip()))
                self.cond.notify_all()

    def mark(self) -> int:
        """The number of lines read so far (a position to look after)."""
        with self.cond:
            return len(self.lines)

    def wait_for(self, since: int, pattern: str, timeout: float = TIMEOUT) -> float:
        """The time of the first line after ``since`` containing ``pattern``."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for stamp, line in self.lines[since:]:
                    if pattern in line:
                        return stamp
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SystemExit(f"no flow event with {pattern!r} within {timeout:g} s")
                self.cond.wait(left)

    def events(self, since: int) -> dict[str, int]:
        """How many flows were ADDED, DELETED and MODIFIED after ``since``."""
        counts = {"ADDED": 0, "DELETED": 0, "MODIFIED": 0}
        with self.cond:
            for _, line in self.lines[since:]:
                found = re.search(r"event=(ADDED|DELETED|MODIFIED)", line)
                if found:
                    counts[found.group(1)] += 1
        return counts

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


class Watch:
    """`ovsnvgre watch --verbose` on ``h0`` in the bench's namespace, its log kept."""

    def __init__(self, bench: Bench, log: Path) -> None:
        self.log = log
        with log.open("w") as sink:
            self.process = subprocess.Popen(
                ["ip", "netns", "exec", bench.netns.name, *Bench.command, "watch",
                 "-c", str(bench.fabric_path), "--host", "h0", "--verbose"],
                env=bench.switch.env, stdout=sink, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text()

    def wait_for_run(self, since: int, timeout: float = TIMEOUT) -> str:
        """The first line after character ``since`` that ends a run (checked or repaired)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"watch ended ({self.process.returncode}):\n{self.text()}")
            for line in self.text()[since:].splitlines():
                if re.search(r"ovsnvgre watch: (checked|repaired|could not converge)", line):
                    return line
            if time.monotonic() > deadline:
                raise SystemExit(f"watch finished no run within {timeout:g} s:\n"
                                 f"{self.text()[-3000:]}")
            time.sleep(0.02)

    def settle(self, quiet: float = 1.5, timeout: float = TIMEOUT) -> None:
        """Wait until the log has not grown for ``quiet`` seconds: the runs that a
        change's own flow events start are over."""
        deadline = time.monotonic() + timeout
        size, since = len(self.text()), time.monotonic()
        while time.monotonic() - since < quiet:
            if time.monotonic() > deadline:
                raise SystemExit(f"watch never went quiet:\n{self.text()[-3000:]}")
            time.sleep(0.05)
            if len(self.text()) != size:
                size, since = len(self.text()), time.monotonic()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def replace_file(path: Path, text: str) -> float:
    """Write ``text`` beside ``path`` and rename it over ``path``; the time of the rename."""
    staged = path.with_name(f".{path.name}.new")
    staged.write_text(text)
    with staged.open("rb") as handle:
        os.fsync(handle.fileno())
    stamp = time.monotonic()
    os.rename(staged, path)
    return stamp


def one_change(bench: Bench, events: Events, watch: Watch, text: str, seen: str
               ) -> dict:
    """Replace the fabric file by ``text`` and wait for the flow event with ``seen``
    (ADDED or DELETED) of the extra VM's MAC, then for watch's run to end."""
    rows_before = bench.db_versions()
    mark, log_at = events.mark(), len(watch.text())
    began = replace_file(bench.fabric_path, text)
    installed = events.wait_for(mark, EXTRA_MAC if seen == "ADDED" else
                                "event=DELETED", TIMEOUT)
    line = watch.wait_for_run(log_at)
    time.sleep(0.3)  # flows or rows a run might still write after its log line
    rows_after = bench.db_versions()
    rows = sum(rows_before.get(k) != v for k, v in rows_after.items()) + \
        len(set(rows_before) - set(rows_after))
    return {"seconds": installed - began, "rows": rows, **events.events(mark), "log": line}


def expected_flows(bench: Bench) -> int:
    """How many of h0's flows name the extra VM's MAC once it is added."""
    extra = fabric_module.load(bench.extra_path)
    state = desired_host(extra, "h0")
    return sum(EXTRA_MAC in f.add_line() for f in desired_flows(state, set(state.ports)))


def flows_with_mac(bench: Bench) -> int:
    out = bench.netns.exec("ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-int",
                           env=bench.switch.env).stdout
    return sum(EXTRA_MAC in line for line in out.splitlines())


def floor(bench: Bench, workdir: Path, runs: int) -> tuple[float, float]:
    """(add, remove) medians of the hand-made one-VM change (see the module docstring)."""
    extra = desired_host(fabric_module.load(bench.extra_path), "h0")
    base = desired_flows(bench.state, set(bench.state.ports))
    changed = desired_flows(extra, set(extra.ports)) - base
    flow_file = workdir / "floor-flows.txt"
    # Another cookie: these are not ovsnvgre's flows, and are deleted after.
    flow_file.write_text("".join(f.add_line().replace("cookie=0x6f76736e76677265", "cookie=0x1")
                                 .removeprefix("add ") + "\n" for f in changed))
    adds, removes = [], []
    for _ in range(runs):
        began = time.perf_counter()
        bench.netns.exec("ovs-vsctl", "add-port", "br-int", "vextra", env=bench.switch.env,
                         timeout=600)
        bench.netns.exec("ovs-ofctl", "-O", "OpenFlow13", "--bundle", "add-flows", "br-int",
                         str(flow_file), env=bench.switch.env, timeout=600)
        adds.append(time.perf_counter() - began)
        began = time.perf_counter()
        bench.netns.exec("ovs-ofctl", "-O", "OpenFlow13", "del-flows", "br-int",
                         "cookie=0x1/-1", env=bench.switch.env, timeout=600)
        bench.netns.exec("ovs-vsctl", "del-port", "br-int", "vextra", env=bench.switch.env,
                         timeout=600)
        removes.append(time.perf_counter() - began)
    return statistics.median(adds), statistics.median(removes)


def run(hosts: int, mode: str, runs: int, workdir: Path) -> dict:
    text = generate(hosts, vsids=20, local_vms=20, vms_per_peer=20, shared_per_peer=10,
                    tunnel_ports=mode, hosts_per_subnet=25)
    bench = Bench(hosts, mode, workdir, text=text)
    events = watch = None
    try:
        flows = desired_flows(bench.state, set(bench.state.ports))
        result: dict = {"hosts": hosts, "mode": mode, "vms": len(bench.fabric.vms),
                        "ports": len(bench.state.ports), "flows": len(flows),
                        "extra_flows": expected_flows(bench)}
        result["up"] = bench.ovsnvgre("up")
        result["floor_add"], result["floor_remove"] = floor(bench, workdir, runs)
        events = Events(bench)
        watch = Watch(bench, workdir / f"watch-{mode}.log")
        started = time.monotonic()
        watch.wait_for_run(0, 600)
        result["watch_start"] = time.monotonic() - started
        added, removed = [], []
        extra_text = with_extra_vm(text)
        for index in range(runs):
            watch.settle(1.0 + 0.37 * index)  # not in step with watch's own timers
            added.append(one_change(bench, events, watch, extra_text, "ADDED"))
            found = flows_with_mac(bench)
            if found != result["extra_flows"]:
                raise SystemExit(f"after adding the VM: {found} flows name its MAC, "
                                 f"{result['extra_flows']} expected")
            watch.settle(1.0 + 0.37 * index)
            removed.append(one_change(bench, events, watch, text, "DELETED"))
            if flows_with_mac(bench):
                raise SystemExit("after removing the VM, flows still name its MAC")
            print(f"  {mode} run {index + 1}: add {added[-1]['seconds']:.3f} s, "
                  f"remove {removed[-1]['seconds']:.3f} s", file=sys.stderr, flush=True)
        for name, changes in (("add", added), ("remove", removed)):
            result[name] = statistics.median(c["seconds"] for c in changes)
            result[f"{name}_all"] = [round(c["seconds"], 4) for c in changes]
            result[f"{name}_rows"] = max(c["rows"] for c in changes)
            result[f"{name}_flows"] = max(c["ADDED"] + c["DELETED"] + c["MODIFIED"]
                                          for c in changes)
            result[f"{name}_log"] = changes[-1]["log"]
        return result
    finally:
        if watch is not None:
            watch.stop()
        if events is not None:
            events.close()
        bench.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--modes", default="per-peer,per-vsid",
                        help="comma-separated tunnel modes (per-peer, per-vsid)")
    parser.add_argument("--runs", type=int, default=5, help="changes per figure (median)")
    parser.add_argument("--installed", action="store_true",
                        help="install this checkout into a venv of the bench's own and run "
                             "its `ovsnvgre` (default: `python -m ovsnvgre` from the "
                             "checkout: watch starts once, so start-up is not measured)")
    parser.add_argument("--keep-logs", metavar="DIR", help="copy watch's logs into DIR")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ovsnvgre-watchbench-") as tmp:
        workdir = Path(tmp)
        Bench.command = installed(workdir) if args.installed else FROM_SOURCE
        os.environ["OVSNVGRE_CACHE_DIR"] = str(workdir / "fabric-cache")
        results = []
        try:
            for mode in args.modes.split(","):
                results.append(run(args.hosts, mode, args.runs, workdir))
                print(json.dumps({k: v for k, v in results[-1].items()
                                  if not k.endswith("_log")}), file=sys.stderr, flush=True)
        finally:
            if args.keep_logs:
                Path(args.keep_logs).mkdir(parents=True, exist_ok=True)
                for log in workdir.glob("watch-*.log"):
                    (Path(args.keep_logs) / log.name).write_text(log.read_text())
    if args.json:
        print(json.dumps({"results": results}, indent=2))
        return
    print(f"machine: {platform.node()} {platform.machine()}, {platform.python_version()}, "
          f"median of {args.runs} changes, from the fabric file's rename to the VM's flows")
    for r in results:
        print(f"{r['mode']}: {r['hosts']} hosts, {r['vms']} VMs, {r['ports']} ports, "
              f"{r['flows']} flows on h0 (`up` {r['up']:.1f} s, watch's first run "
              f"{r['watch_start']:.1f} s)")
        for name, what in (("add", "one VM added  "), ("remove", "one VM removed")):
            print(f"  {what} {r[name]:.3f} s  (all: "
                  f"{', '.join(f'{s:.3f}' for s in r[f'{name}_all'])}); by hand "
                  f"{r[f'floor_{name}']:.3f} s; {r[f'{name}_rows']} rows + "
                  f"{r[f'{name}_flows']} flows written ({r['extra_flows']} flows name the VM)")


if __name__ == "__main__":
    main()
