"""Crash safety at fabric scale: kill -9 of `ovsnvgre up` at random moments, two runs at
once, and how fast a run gives up on a missing ovs-vswitchd or ovsdb-server.

    sudo python3 bench/crash.py [--kills 12] [--seed 7]

On the 1,000-port fabric of converge.py (one private switch, userspace datapath):
each kill is followed by a plain `up`, which must exit 0 and leave exactly the state
a clean run builds (every Bridge/Port/Interface row without its uuids, the owned
flows, the links' addresses and routes), with no rollback file left.  Prints one
line per run and a summary; exits 1 if any run did not end clean.  Never part of
the test pass/fail (tests/test_one_run.py proves the same on the small fabric).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).parent.parent))

from converge import Bench  # noqa: E402

ROLLBACK_FILE = "ovsnvgre-rollback.json"


def state(bench: Bench) -> dict:
    """What a clean run must leave: rows (no uuids), owned flows, addresses, routes."""
    env, ns = bench.switch.env, bench.netns.exec
    tables = {}
    for table, columns in (("Bridge", ["name", "datapath_type", "fail_mode", "protocols",
                                       "external_ids"]),
                           ("Port", ["name", "external_ids"]),
                           ("Interface", ["name", "type", "options", "external_ids"])):
        query = ["Open_vSwitch", {"op": "select", "table": table, "where": [],
                                  "columns": columns}]
        out = ns("ovsdb-client", "transact", bench.switch.db, json.dumps(query), env=env).stdout
        tables[table] = sorted(json.dumps(r, sort_keys=True) for r in json.loads(out)[0]["rows"])
    # By port name: a port deleted and made again gets another OpenFlow number.
    flows = ns("ovs-ofctl", "-O", "OpenFlow13", "--no-stats", "--names", "dump-flows",
               "br-int", env=env, check=False).stdout.splitlines()
    # Link-local addresses follow a device made again (the tep port after `down`).
    addresses = [" ".join(word for word in line.split() if not word.startswith("fe80:"))
                 for line in ns("ip", "-br", "addr", "show").stdout.splitlines()]
    routes = ns("ip", "route", "show").stdout.splitlines()
    return {"tables": tables, "flows": sorted(f for f in flows if "cookie=" in f),
            "addresses": sorted(addresses), "routes": sorted(routes)}


def difference(clean: dict, now: dict) -> str:
    """The first lines that differ from the clean state, per part."""
    parts = []
    for part in ("tables", "flows", "addresses", "routes"):
        if part == "tables":
            a = [row for rows in clean[part].values() for row in rows]
            b = [row for rows in now[part].values() for row in rows]
        else:
            a, b = clean[part], now[part]
        if a != b:
            missing, extra = sorted(set(a) - set(b))[:2], sorted(set(b) - set(a))[:2]
            parts.append(f"{part}: missing {missing} extra {extra}")
    return "; ".join(parts)


def command(bench: Bench, *args: str) -> list[str]:
    return ["ip", "netns", "exec", bench.netns.name, *bench.command, *args, "-c",
            str(bench.fabric_path), "--host", "h0", "--no-verify"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    chance = random.Random(args.seed)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        Bench.command = [sys.executable, "-m", "ovsnvgre"]
        os.environ["OVSNVGRE_CACHE_DIR"] = str(Path(tmp) / "fabric-cache")
        bench = Bench(101, "per-vsid", Path(tmp))
        env = bench.switch.env
        rollback = bench.switch.rundir / ROLLBACK_FILE
        try:
            began = time.perf_counter()
            bench.ovsnvgre("up")
            took = time.perf_counter() - began
            clean = state(bench)
            print(f"clean `up` from empty: {took:.2f} s; {len(clean['flows'])} owned flows, "
                  f"{len(clean['tables']['Port'])} ports")
            interrupted = 0
            for index in range(args.kills):
                bench.ovsnvgre("down")
                moment = chance.uniform(0.0, took)
                run = subprocess.Popen(command(bench, "up"), env=env, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
                time.sleep(moment)
                run.send_signal(signal.SIGKILL)
                run.wait()
                left = rollback.exists()
                interrupted += left
                began = time.perf_counter()
                after = subprocess.run(command(bench, "up"), env=env, capture_output=True,
                                       text=True)
                seconds = time.perf_counter() - began
                now = state(bench)
                ok = after.returncode == 0 and not rollback.exists() and now == clean
                failures += not ok
                if now != clean:
                    print("  differs:", difference(clean, now))
                print(f"kill {index + 1:2d} at {moment:5.2f} s: "
                      f"{'left its rollback state' if left else 'nothing half-done':24} "
                      f"-> `up` exit {after.returncode} in {seconds:.2f} s: "
                      f"{'clean' if ok else 'NOT CLEAN ' + after.stderr.strip()[-200:]}")
            print(f"{interrupted} of {args.kills} kills interrupted a change")
            bench.ovsnvgre("down")
            runs = [subprocess.Popen(command(bench, "up"), env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True) for _ in range(2)]
            errors = [run.communicate()[1] for run in runs]
            ok = [r.returncode for r in runs] == [0, 0] and not rollback.exists() \
                and state(bench) == clean
            failures += not ok
            waited = sum("waiting up to" in e for e in errors)
            print(f"two `up` at once: exits {[r.returncode for r in runs]}, {waited} waited "
                  f"for the other: {'clean' if ok else 'NOT CLEAN'}")
            bench.switch.stop_vswitchd()
            began = time.perf_counter()
            result = subprocess.run(command(bench, "down"), env=env, capture_output=True,
                                    text=True)
            print(f"without ovs-vswitchd: `down` exit {result.returncode} after "
                  f"{time.perf_counter() - began:.1f} s: {result.stderr.strip()[-160:]}")
            bench.switch.start_vswitchd()
            server = int((bench.switch.rundir / "ovsdb-server.pid").read_text())
            os.kill(server, signal.SIGSTOP)
            began = time.perf_counter()
            result = subprocess.run(command(bench, "up"), env=env, capture_output=True,
                                    text=True)
            os.kill(server, signal.SIGCONT)
            print(f"ovsdb-server not answering: `up` exit {result.returncode} after "
                  f"{time.perf_counter() - began:.1f} s: {result.stderr.strip()[-160:]}")
        finally:
            bench.close()
    print("all clean" if not failures else f"{failures} run(s) not clean")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
