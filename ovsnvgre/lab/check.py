"""Prove a running lab: the reachability matrix, TCP inside each VSID, NVGRE on the wire."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ovsnvgre import nvgre
from ovsnvgre.lab import proc
from ovsnvgre.lab.builder import lab_dir
from ovsnvgre.lab.pcap import gre_packets
from ovsnvgre.lab.topology import VM_IFNAME, LabVm, Probe, Topology, matrix
from ovsnvgre.model import Fabric, FlowId

TCP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); s.settimeout(20)
print("listening", flush=True)
c, _ = s.accept(); c.settimeout(10)
data = b""
while len(data) < 65536:
    chunk = c.recv(65536)
    if not chunk:
        break
    data += chunk
c.sendall(data)
c.close()
"""

TCP_CLIENT = """
import socket, sys
payload = bytes(range(256)) * 256
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.sendall(payload)
back = b""
while len(back) < len(payload):
    chunk = s.recv(65536)
    if not chunk:
        break
    back += chunk
print("ok" if back == payload else "mismatch")
"""


def tcp_echo(source_netns: str, target_netns: str, address: str, port: int = 5201) -> bool:
    """64 KiB over one TCP connection from source to target and back, compared."""
    # Isolated (-I) and from /: `-c` would put the working directory first on sys.path,
    # and a socket.py there would run as root.
    server = subprocess.Popen(["ip", "netns", "exec", target_netns, sys.executable, "-I", "-c",  # noqa: S603, S607 - a fixed argv, no shell, no user-supplied program; OVS and iproute2 tools are found on PATH, as OVS's own scripts find them
                               TCP_ECHO, address, str(port)], cwd="/",
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert server.stdout is not None  # noqa: S101 - an invariant the code above guarantees, not input checking
        if "listening" not in server.stdout.readline():
            return False
        result = proc.run(sys.executable, "-I", "-c", TCP_CLIENT, address, str(port),
                          netns=source_netns, check=False, timeout=30, cwd="/")
        return result.returncode == 0 and result.stdout.strip() == "ok"
    finally:
        server.kill()
        server.wait()


@dataclass
class ProbeResult:
    """One cell of the matrix: expected and observed reachability, and TCP when tried."""

    source: str
    target: str
    address: str
    same_vsid: bool
    expected: bool
    observed: bool
    answered_by: str | None
    tcp: bool | None = None

    @property
    def ok(self) -> bool:
        """Whether the probe saw what the fabric says."""
        return self.expected == self.observed and self.tcp is not False


@dataclass
class WireResult:
    """What the underlay capture showed: GRE packets, keys seen and expected, problems."""

    packets: int = 0
    keys_seen: list[str] = field(default_factory=list)
    keys_expected: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # With overlay.flow_id: hash, how many FlowIDs the keys carried (the VSID bits
    # are what keys_seen lists then).
    flow_ids_seen: int = 0

    @property
    def ok(self) -> bool:
        """Whether every GRE packet was NVGRE with a fabric key, and every key crossed."""
        return not self.problems


@dataclass
class CheckResult:
    """The whole check: every probe and the wire."""

    probes: list[ProbeResult]
    wire: WireResult

    @property
    def ok(self) -> bool:
        """Whether the wire and every probe are as the fabric says."""
        return self.wire.ok and all(p.ok for p in self.probes)

    def as_dict(self) -> dict:
        """The check as JSON-ready data (`lab check --json`)."""
        return {"ok": self.ok, "probes": [{**asdict(p), "ok": p.ok} for p in self.probes],
                "wire": {**asdict(self.wire), "ok": self.wire.ok}}


def _probe(probe: Probe, vms: dict[str, LabVm]) -> ProbeResult:
    source, target = vms[probe.source], vms[probe.target]
    proc.run("ip", "-n", source.netns, "neigh", "flush", "dev", VM_IFNAME, check=False)
    ping = proc.run("ping", "-c", "3", "-i", "0.2", "-W", "2", probe.address,
                    netns=source.netns, check=False)
    neighbour = proc.run("ip", "-n", source.netns, "neigh", "show", probe.address,
                         check=False).stdout.split()
    mac = neighbour[neighbour.index("lladdr") + 1] if "lladdr" in neighbour else None
    answered_by = next((vm.name for vm in vms.values() if vm.mac == mac), mac)
    observed = ping.returncode == 0 and mac == target.mac
    return ProbeResult(probe.source, probe.target, probe.address, probe.same_vsid,
                       probe.expected, observed, answered_by if ping.returncode == 0 else None)


def _probes_from(source: str, probes: list[Probe], vms: dict[str, LabVm]) -> list[ProbeResult]:
    return [_probe(p, vms) for p in probes if p.source == source]


class _Capture:
    def __init__(self, netns: str | None, ifname: str, path: Path) -> None:
        self.path = path
        in_netns = ["ip", "netns", "exec", netns] if netns else []
        self.process = subprocess.Popen(  # noqa: S603 - a fixed argv, no shell, no user-supplied program
            [*in_netns, "tcpdump", "-i", ifname, "-n", "-U", "-w", str(path), "ip proto 47"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert self.process.stderr is not None  # noqa: S101 - an invariant the code above guarantees, not input checking
        self.process.stderr.readline()  # "listening on ..." once it captures

    def stop(self) -> None:
        time.sleep(0.3)
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def expected_keys(fabric: Fabric, topology: Topology, host: str | None = None) -> set[int]:
    """The keys that must appear on the wire: VSIDs that have VMs on two hosts or more.

    Seen from one ``host``: only the VSIDs that have VMs both there and elsewhere.
    """
    hosts_of: dict[int, set[str]] = {}
    for vm in topology.vms:
        hosts_of.setdefault(vm.vsid, set()).add(vm.host)
    return {nvgre.tunnel_key(vsid, fabric.overlay.key_layout)
            for vsid, hosts in hosts_of.items()
            if len(hosts) > 1 and (host is None or host in hosts)}


def run(fabric: Fabric, topology: Topology, host: str | None = None) -> CheckResult:
    """The whole lab's matrix; with ``host``, only the probes from that host's VMs.

    With ``host`` this runs on a real (or Vagrant) host whose VMs `lab guests`
    made: the GRE capture is on the host's uplink here, and TCP is tried only
    between VMs of this host (the other end of a tunnel runs no echo server).
    """
    vms = {vm.name: vm for vm in topology.vms}
    local = {vm.name for vm in topology.vms if host is None or vm.host == host}
    probes = [p for p in matrix(topology) if p.source in local]
    directory = lab_dir(topology.prefix)
    directory.mkdir(parents=True, exist_ok=True)
    captures = [_Capture(h.netns if host is None else None, h.uplink,
                         directory / f"{h.name}.pcap")
                for h in topology.hosts if host is None or h.name == host]
    try:
        sources = sorted({p.source for p in probes})
        with ThreadPoolExecutor(max_workers=max(1, len(sources))) as pool:
            results = [r for batch in pool.map(lambda s: _probes_from(s, probes, vms), sources)
                       for r in batch]
        for result in results:
            if result.expected and result.source < result.target and result.target in local:
                result.tcp = tcp_echo(vms[result.source].netns, vms[result.target].netns,
                                      result.address)
    finally:
        for capture in captures:
            capture.stop()
    # With a hashed FlowID the low 8 bits vary per flow: the VSID bits must be right.
    ignored = 0xFF if fabric.overlay.flow_id == FlowId.HASH else 0
    wire = _wire(expected_keys(fabric, topology, host), [c.path for c in captures], ignored)
    order = {vm.name: index for index, vm in enumerate(topology.vms)}
    results.sort(key=lambda r: (order[r.source], order[r.target]))
    return CheckResult(results, wire)


def _wire(expected: set[int], paths: list[Path], ignored: int = 0) -> WireResult:  # noqa: C901 - one decision per branch, each documented; splitting would scatter it
    """The capture's GRE packets checked against the ``expected`` keys, compared without
    the ``ignored`` bits (0xFF: the FlowID, when it is a hash)."""
    result = WireResult(keys_expected=[f"{k:#x}" for k in sorted(expected)])
    seen: set[int] = set()
    flow_ids: set[int] = set()
    for path in paths:
        for packet in gre_packets(path):
            result.packets += 1
            flags = []
            if not packet.key_present:
                flags.append("K=0")
            if packet.checksum_present:
                flags.append("C=1")
            if packet.sequence_present:
                flags.append("S=1")
            if packet.version != 0:
                flags.append(f"version {packet.version}")
            if packet.protocol != 0x6558:
                flags.append(f"protocol {packet.protocol:#06x}")
            if packet.key is not None:
                seen.add(packet.key & ~ignored)
                flow_ids.add(packet.key & ignored)
                if (packet.key & ~ignored) not in expected:
                    flags.append(f"key {packet.key:#x} is no VSID key of the fabric")
            if flags:
                problem = f"{path.stem}: GRE packet with {', '.join(flags)}"
                if problem not in result.problems:
                    result.problems.append(problem)
    result.keys_seen = [f"{k:#x}" for k in sorted(seen)]
    result.flow_ids_seen = len(flow_ids) if ignored else 0
    for key in sorted(expected - seen):
        result.problems.append(f"no GRE packet with key {key:#x} crossed the underlay")
    return result


def table(result: CheckResult) -> list[str]:
    """The check as the lines `lab check` prints."""
    rows = [("from", "to", "address", "vsid", "expected", "observed", "tcp", "")]
    for p in result.probes:
        rows.append((p.source, p.target, p.address, "same" if p.same_vsid else "other",
                     "reach" if p.expected else "no reach",
                     "reach" if p.observed else (f"no reach ({p.answered_by} answered)"
                                                 if p.answered_by else "no reach"),
                     {True: "ok", False: "FAILED", None: "-"}[p.tcp],
                     "ok" if p.ok else "MISMATCH"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    wire = result.wire
    lines.append("")
    hashed = f" + {wire.flow_ids_seen} hashed FlowIDs" if wire.flow_ids_seen else ""
    lines.append(f"underlay: {wire.packets} GRE packets; keys seen {', '.join(wire.keys_seen)}"
                 f"{hashed} (expected {', '.join(wire.keys_expected)}); K=1 C=0 S=0 protocol "
                 f"0x6558: {'ok' if wire.ok else 'MISMATCH'}")
    lines += [f"  {problem}" for problem in wire.problems]
    failed = sum(not p.ok for p in result.probes)
    lines.append(f"{len(result.probes)} probes, {failed} mismatches: "
                 f"{'all green' if result.ok else 'FAILED'}")
    return lines
