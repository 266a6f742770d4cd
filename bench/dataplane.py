"""What the tenant pipeline costs the datapath, in the namespaces lab.

    sudo python3 bench/dataplane.py [--seconds 5]

VM to VM TCP throughput (iperf3) and ping latency, in two labs run one after the other.

examples/routing.yaml (issue 18), web-a on host1 to host2, both with ovsnvgre's pipeline:
  1. bridged: to web-b, in web's VSID,
  2. routed: to db-b, another subnet of the routing domain: the distributed router on
     host1 routes (TTL, MACs) and sends it with db's key to the same peer host.
The ratio is routed against bridged, measured in the same lab (target: >= 0.9x).

The HNV two-host lab, Red on host1 to Red on host2:
  3. across the tunnel with ovsnvgre's pipeline,
  4. across the same tunnel with a bare NORMAL pipeline on both integration bridges,
  5. two VMs on one bridge (NORMAL), no tunnel.
Ratios are taken against (4), measured in the same run.  Needs iperf3.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from ovsnvgre import fabric  # noqa: E402
from ovsnvgre.lab import builder, topology  # noqa: E402
from ovsnvgre.lab.commands import default_fabric  # noqa: E402

ROUTING = Path(__file__).parent.parent / "examples" / "routing.yaml"


def sh(*args: str, netns: str | None = None, env: dict | None = None,
       check: bool = True) -> str:
    command = ["ip", "netns", "exec", netns, *args] if netns else list(args)
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    if check and result.returncode != 0:
        raise SystemExit(f"{' '.join(command)}: {result.stderr.strip()}")
    return result.stdout


def iperf(client: str, server: str, address: str, seconds: int, tries: int = 3) -> float:
    """Gbit/s received, one TCP stream; a run that fails to connect is tried again (a
    loaded machine may leave the first SYN or the control connection unanswered)."""
    for attempt in range(tries):
        # --forceflush: iperf3 buffers its output into a pipe, "listening" included.
        daemon = subprocess.Popen(["ip", "netns", "exec", server, "iperf3", "-s", "-1",
                                   "--forceflush", "-B", address], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)
        try:
            assert daemon.stdout is not None
            for line in daemon.stdout:  # listening once it says so, not after a guess
                if "Server listening" in line:
                    break
            for _ in range(20):  # until the tunnel's next hop is resolved and the path works
                if subprocess.run(["ip", "netns", "exec", client, "ping", "-c", "1", "-W", "1",
                                   address], capture_output=True).returncode == 0:
                    break
            out = sh("iperf3", "-c", address, "-t", str(seconds), "-J", "--connect-timeout",
                     "3000", netns=client, check=False)
            try:
                data = json.loads(out)
            except ValueError:
                data = {"error": out.strip() or "no output"}
            if "error" not in data:
                return data["end"]["sum_received"]["bits_per_second"] / 1e9
            if attempt == tries - 1:
                raise SystemExit(f"iperf3 {client} -> {address}: {data['error']}")
            print(f"(iperf3 {client} -> {address}: {data['error']}; again)", file=sys.stderr)
        finally:
            daemon.kill()
            daemon.wait()
    raise AssertionError("unreachable")


def latency(client: str, address: str) -> float:
    """Average round trip in ms over 50 pings."""
    out = sh("ping", "-c", "50", "-i", "0.02", "-q", address, netns=client)
    return float(re.search(r"= [\d.]+/([\d.]+)/", out).group(1))


def measure(client: str, server: str, address: str, seconds: int, runs: int) -> tuple[float,
                                                                                       float]:
    throughput = statistics.median(iperf(client, server, address, seconds) for _ in range(runs))
    return throughput, latency(client, address)


def routed_vs_bridged(seconds: int, runs: int) -> dict[str, tuple[float, float]]:
    """Bridged and routed TCP from web-a (host1) to host2 in examples/routing.yaml's lab."""
    with tempfile.TemporaryDirectory(prefix="ovsnvgre-dp-") as tmp:
        path = Path(tmp) / "fabric.yaml"
        path.write_text(ROUTING.read_text().replace("fabric: routing",
                                                    f"fabric: dr{os.getpid()}"))
        fab = fabric.load(path)
        topo = topology.build(fab)
        builder.preflight(fab)
        try:
            builder.up(topo, str(path), lambda _: None)
            vm = {v.name: v for v in topo.vms}
            results = {}
            # Alternated, so that a slower minute of the machine touches both alike.
            for _ in range(runs):
                for name, target in (("bridged", "web-b"), ("routed", "db-b")):
                    results.setdefault(name, []).append(
                        iperf(vm["web-a"].netns, vm[target].netns, str(vm[target].ca.ip),
                              seconds))
            return {name: (statistics.median(values),
                           latency(vm["web-a"].netns, str(vm[target].ca.ip)))
                    for (name, values), target in zip(results.items(), ("web-b", "db-b"),
                                                      strict=True)}
        finally:
            builder.down(topo.prefix, lambda _: None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--routing-only", action="store_true",
                        help="only the routed against bridged comparison (1, 2)")
    args = parser.parse_args()
    # SIGTERM (a timeout, a kill) unwinds like Ctrl-C, so the labs are taken down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if shutil.which("iperf3") is None:
        raise SystemExit("iperf3 not found: apt-get install iperf3")
    routing = routed_vs_bridged(args.seconds, args.runs)
    bridged = routing["bridged"][0]
    print(f"routing domains, {args.runs} x {args.seconds} s iperf3 (median, alternated), "
          "50 pings; netdev datapath in namespaces; web-a on host1 to host2")
    print(f"{'path':12} {'Gbit/s':>7} {'vs bridged':>10} {'rtt ms':>7}")
    for name, (gbits, rtt) in routing.items():
        print(f"{name:12} {gbits:7.2f} {gbits / bridged:9.2f}x {rtt:7.3f}")
    if args.routing_only:
        return
    print()
    with tempfile.TemporaryDirectory(prefix="ovsnvgre-dp-") as tmp:
        path = Path(tmp) / "fabric.yaml"
        path.write_text(Path(default_fabric()).read_text().replace("fabric: hnv",
                                                                   f"fabric: dp{os.getpid()}"))
        topo = topology.build(fabric.load(path))
        builder.preflight(fabric.load(path))
        local = f"{topo.prefix}-v-local"  # made here, not recorded by the lab: deleted here
        try:
            builder.up(topo, str(path), lambda _: None)
            vm = {v.name: v.netns for v in topo.vms}
            host_env = {h.name: builder.host_env(topo.prefix, h.name) for h in topo.hosts}
            host_ns = {h.name: h.netns for h in topo.hosts}
            results = {"pipeline": measure(vm["red-a"], vm["red-b"], "10.0.0.2", args.seconds,
                                           args.runs)}
            for host in host_ns:  # the same Red tunnel, a bare NORMAL pipeline
                # Two tunnels between the same two bridges would be an L2 loop under
                # NORMAL: every GRE port but Red's goes (Blue's, and the per-peer port
                # with in_key=flow that receives any FlowID).
                red = str(5001 << 8)
                tunnels = sh("ovs-vsctl", "--bare", "--columns=name,options", "find",
                             "interface", "type=gre", netns=host_ns[host],
                             env=host_env[host]).split("\n\n")
                for record in tunnels:
                    words = record.split()
                    if words and f'key="{red}"' not in record and f"key={red}" not in record:
                        sh("ovs-vsctl", "del-port", "br-int", words[0], netns=host_ns[host],
                           env=host_env[host])
                sh("ovs-ofctl", "del-flows", "br-int", netns=host_ns[host], env=host_env[host])
                sh("ovs-ofctl", "add-flow", "br-int", "priority=0,actions=NORMAL",
                   netns=host_ns[host], env=host_env[host])
            results["bare tunnel"] = measure(vm["red-a"], vm["red-b"], "10.0.0.2",
                                             args.seconds, args.runs)
            # Two VMs on host1's bridge, no tunnel (blue-a holds 10.0.0.1 too: out it goes).
            sh("ip", "link", "set", "eth0", "down", netns=vm["blue-a"])
            sh("ip", "netns", "add", local)
            sh("ip", "-n", host_ns["host1"], "link", "add", "vlocal", "type", "veth", "peer",
               "name", "eth0", "netns", local)
            sh("ip", "-n", local, "addr", "add", "10.0.0.3/24", "dev", "eth0")
            sh("ip", "-n", local, "link", "set", "eth0", "mtu", "1458", "up")
            sh("ethtool", "-K", "eth0", "tx", "off", netns=local)
            sh("ip", "-n", host_ns["host1"], "link", "set", "vlocal", "up")
            sh("ovs-vsctl", "add-port", "br-int", "vlocal", netns=host_ns["host1"],
               env=host_env["host1"])
            results["one bridge"] = measure(vm["red-a"], local, "10.0.0.3", args.seconds,
                                            args.runs)
        finally:
            builder.down(topo.prefix, lambda _: None)
            subprocess.run(["ip", "netns", "delete", local], capture_output=True)
    bare = results["bare tunnel"][0]
    print(f"dataplane, {args.runs} x {args.seconds} s iperf3 (median), 50 pings; "
          "netdev datapath in namespaces")
    print(f"{'path':12} {'Gbit/s':>7} {'vs bare':>8} {'rtt ms':>7}")
    for name, (gbits, rtt) in results.items():
        print(f"{name:12} {gbits:7.2f} {gbits / bare:7.2f}x {rtt:7.3f}")


if __name__ == "__main__":
    main()
