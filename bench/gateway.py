"""What the way out costs: TCP through an external gateway against TCP routed inside the
fabric, in the namespaces lab (issue 19).

    sudo python3 bench/gateway.py [--seconds 5] [--runs 3]

examples/gateway.yaml's lab, one iperf3 TCP stream each (median of the runs), all
across the same kind of GRE tunnel from host1:
  1. routed inside the fabric: web-a (host1) to db-b (host2), contoso's distributed router;
  2. through the gateway, SNAT: front-a (host1) to the outside server 203.0.113.100, via
     host3's namespace for fabrikam (tunnel, then nftables SNAT, then the external NIC);
  3. a floating IP from outside: the outside to web-a at 203.0.113.21 (DNAT, tunnel).
Ratios are taken against (1), measured in the same run.  Needs iperf3.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from ovsnvgre import fabric  # noqa: E402
from ovsnvgre.lab import commands, outside, topology  # noqa: E402


def sh(*args: str, netns: str) -> str:
    result = subprocess.run(["ip", "netns", "exec", netns, *args], capture_output=True,
                            text=True, timeout=120)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} in {netns}: {result.stderr.strip()}")
    return result.stdout


def iperf(client: str, server: str, address: str, seconds: int, bind: str) -> float:
    """Gbit/s received, one TCP stream to ``address``, the server listening on ``bind``."""
    daemon = subprocess.Popen(["ip", "netns", "exec", server, "iperf3", "-s", "-1", "-B", bind],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        for _ in range(20):  # until every next hop on the way is resolved
            if subprocess.run(["ip", "netns", "exec", client, "ping", "-c", "1", "-W", "1",
                               address], capture_output=True).returncode == 0:
                break
        data = json.loads(sh("iperf3", "-c", address, "-t", str(seconds), "-J",
                             "--connect-timeout", "3000", netns=client))
        if "error" in data:
            raise SystemExit(f"iperf3 {client} -> {address}: {data['error']}")
        return data["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        daemon.kill()
        daemon.wait()


def latency(client: str, address: str) -> float:
    """Average round trip in ms over 50 pings."""
    out = sh("ping", "-c", "50", "-i", "0.02", "-q", address, netns=client)
    found = re.search(r"= [\d.]+/([\d.]+)/", out)
    return float(found.group(1)) if found else float("nan")

EXAMPLE = Path(__file__).parent.parent / "examples" / "gateway.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("iperf3") is None:
        raise SystemExit("iperf3 not found: apt-get install iperf3")
    with tempfile.TemporaryDirectory(prefix="ovsnvgre-gw-") as tmp:
        path = Path(tmp) / "fabric.yaml"
        path.write_text(EXAMPLE.read_text().replace("fabric: gateway",
                                                    f"fabric: gwb{os.getpid() % 10000}"))
        topo = topology.build(fabric.load(path))
        try:
            commands.up(str(path), lambda _: None)
            vm = {v.name: v.netns for v in topo.vms}
            out = outside.netns(topo)
            paths = {
                "routed": (vm["web-a"], vm["db-b"], "10.1.2.20", "10.1.2.20"),
                "gateway SNAT": (vm["front-a"], out, "203.0.113.100", "203.0.113.100"),
                "floating IP in": (out, vm["web-a"], "203.0.113.21", "10.1.1.20"),
            }
            results = {}
            for name, (client, server, address, bind) in paths.items():
                gbits = statistics.median(iperf(client, server, address, args.seconds, bind)
                                          for _ in range(args.runs))
                results[name] = (gbits, latency(client, address))
        finally:
            commands.down(str(path), lambda _: None)
    routed = results["routed"][0]
    print(f"external gateway, {args.runs} x {args.seconds} s iperf3 (median), 50 pings; "
          "netdev datapath in namespaces")
    print(f"{'path':15} {'Gbit/s':>7} {'vs routed':>10} {'rtt ms':>7}")
    for name, (gbits, rtt) in results.items():
        print(f"{name:15} {gbits:7.2f} {gbits / routed:9.2f}x {rtt:7.3f}")


if __name__ == "__main__":
    main()
