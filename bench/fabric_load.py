"""How long reading a fabric file takes, with and without the fabric cache.

    python3 bench/fabric_load.py [--runs 7] [--fabrics bench,20k,100k] [--json]

Three fabrics from fabric_gen.py: the converge bench's (101 hosts, 3,050 VMs), a
1,000-host x 20-VM one (20,020 VMs) and a 5,000-host x 20-VM one (100,000 VMs, the
size of issue 17's `validate` target).  For each: the whole `ovsnvgre validate`
process with the cache off (OVSNVGRE_NO_CACHE=1: parse and validate every time),
with the cache on and empty (a new cache directory each run: parse, validate and
write the entry: a fabric's first run) and with the entry already written; and
`fabric.load` inside one process (what a converged `up` pays before it reads the
switch), cache off and entry written.  Each cache lives in a temporary directory of
its own.  Wall-clock medians, and the validate process's CPU time (user + system,
which a busy neighbour on a shared machine inflates less).  Times `python -m
ovsnvgre` of the interpreter running this script, whatever `ovsnvgre` it imports
(PYTHONPATH may point at another checkout).  Figures, never test pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fabric_gen import generate  # noqa: E402

LOAD = """
import sys, time
from ovsnvgre import fabric
start = time.perf_counter()
fabric.load(sys.argv[1])
print(time.perf_counter() - start)
"""

# --fabrics name -> (what the report calls it, the fabric)
FABRICS = {
    "bench": ("bench (101 hosts, 3,050 VMs)", lambda: generate(101, tunnel_ports="per-vsid")),
    "20k": ("1,000 hosts x 20 VMs (20,020 VMs)",
            lambda: generate(1000, local_vms=20, vms_per_peer=20)),
    "100k": ("5,000 hosts x 20 VMs (100,000 VMs)",
             lambda: generate(5000, local_vms=20, vms_per_peer=20)),
}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _whole(env: dict[str, str], path: Path, cwd: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one `ovsnvgre validate` process."""
    cpu, start = _cpu(), time.perf_counter()
    subprocess.run([sys.executable, "-m", "ovsnvgre", "validate", "-c", str(path)], env=env,
                   cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start, _cpu() - cpu


def _load(env: dict[str, str], path: Path, cwd: str) -> float:
    result = subprocess.run([sys.executable, "-c", LOAD, str(path)], env=env, cwd=cwd,
                            check=True, capture_output=True, text=True)
    return float(result.stdout)


def measure(text: str, runs: int, workdir: Path) -> dict[str, float]:
    """Medians (seconds) of validate and load, cache off, empty and warm."""
    path = workdir / "fabric.yaml"
    path.write_text(text)
    cache = workdir / "cache"
    cold = {**os.environ, "OVSNVGRE_NO_CACHE": "1"}
    warm = {**os.environ, "OVSNVGRE_CACHE_DIR": str(cache)}
    warm.pop("OVSNVGRE_NO_CACHE", None)
    _whole(warm, path, str(workdir))  # writes the entry
    validates = ("validate, no cache", "validate, cache empty", "validate, cached")
    times: dict[str, list[float]] = {k: [] for k in (
        *validates, *(f"{k} (CPU)" for k in validates), "load, no cache", "load, cached")}
    for run in range(runs):  # interleaved, so that a busy neighbour hits every mode alike
        empty = {**warm, "OVSNVGRE_CACHE_DIR": str(workdir / f"empty-{run}")}
        for mode, env in zip(validates, (cold, empty, warm), strict=True):
            wall, cpu = _whole(env, path, str(workdir))
            times[mode].append(wall)
            times[f"{mode} (CPU)"].append(cpu)
        times["load, no cache"].append(_load(cold, path, str(workdir)))
        times["load, cached"].append(_load(warm, path, str(workdir)))
    entries = sorted(p.name for p in cache.iterdir()) if cache.exists() else []
    result = {k: statistics.median(v) for k, v in times.items()}
    result["entry bytes"] = sum((cache / e).stat().st_size for e in entries)
    return result


def main() -> None:
    """Print the medians per fabric (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--fabrics", default=",".join(FABRICS),
                        help=f"comma-separated, of: {', '.join(FABRICS)}")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    found = subprocess.run([sys.executable, "-c", "import ovsnvgre; print(ovsnvgre.__file__)"],
                           capture_output=True, text=True, check=True).stdout.strip()
    report = {}
    for key in args.fabrics.split(","):
        name, make = FABRICS[key]
        with tempfile.TemporaryDirectory(prefix="ovsnvgre-load-") as tmp:
            report[name] = measure(make(), args.runs, Path(tmp))
    if args.json:
        print(json.dumps({"ovsnvgre": found, "results": report}, indent=2))
        return
    print(f"{platform.python_version()}, {os.cpu_count()} cores, ovsnvgre from {found}, "
          f"medians of {args.runs}")
    for name, figures in report.items():
        print(f"{name}:")
        for key, value in figures.items():
            print(f"  {key}: {value:.0f}" if key == "entry bytes" else f"  {key}: {value:.3f} s")


if __name__ == "__main__":
    main()
