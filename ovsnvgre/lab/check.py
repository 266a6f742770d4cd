"""Prove a running lab: the reachability matrix, TTLs, TCP, NVGRE on the wire.

What each probe must see comes from the fabric (expect.py: bridged, routed, isolated,
gateway); the packets are sent by probes.py from inside the VMs, all VMs at once and
every address of one VM at once, while one capture per host records the underlay for
wire.py to judge.
"""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ovsnvgre.lab import expect, probes, proc, wire
from ovsnvgre.lab.builder import lab_dir
from ovsnvgre.lab.expect import ROUTER, Outcome, Probe, Seen
from ovsnvgre.lab.topology import LabVm, Topology
from ovsnvgre.lab.wire import WireResult
from ovsnvgre.model import Fabric

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
    """One cell of the matrix: what the fabric says and what was seen (``expect.Probe``,
    ``expect.Seen``); ``problems`` empty when they agree."""

    source: str
    target: str
    address: str
    outcome: str
    same_vsid: bool
    expected: bool
    observed: bool
    answered_by: str | None
    replied: bool = False
    expected_ttl: int | None = None
    ttl: list[int] = field(default_factory=list)
    tcp: bool | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the probe saw what the fabric says."""
        return not self.problems

    @classmethod
    def of(cls, probe: Probe, seen: Seen) -> ProbeResult:
        """The result of ``probe`` having seen ``seen``."""
        return cls(probe.source, probe.target, probe.address, str(probe.outcome),
                   probe.same_vsid, probe.expected, expect.reached(probe, seen),
                   seen.answered_by, seen.replied, probe.ttl, list(seen.ttls), seen.tcp,
                   expect.problems(probe, seen))


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


def _asks(mine: list[Probe], local: set[str]) -> dict[str, bool]:
    """The addresses a VM asks who they are (``mine``: its probes): every VM address
    but those the router answers (it runs no TCP service); True where a TCP echo is
    wanted too: a target it must reach that runs a whoami service (``local``)."""
    asks: dict[str, bool] = {}
    for probe in mine:
        if probe.outcome is Outcome.GATEWAY or probe.responder == ROUTER:
            continue
        echo = probe.expected and probe.target in local
        asks[probe.address] = asks.get(probe.address, False) or echo
    return asks


def _identify(answer: probes.Answer, source: LabVm, topology: Topology) -> str | None:
    """Who answered: the whoami name, else the neighbour entry's MAC (the router's, or
    a VM's, preferring the source's VSID, where MACs are unique), else unknown."""
    if answer.name is not None:
        return answer.name
    if answer.mac is None:
        return None
    if answer.mac == topology.router_mac.lower():
        return ROUTER
    owners = sorted((vm.vsid != source.vsid, vm.name) for vm in topology.vms
                    if vm.mac == answer.mac)
    return owners[0][1] if owners else answer.mac


def _from(source: LabVm, mine: list[Probe], topology: Topology,
          local: set[str]) -> list[ProbeResult]:
    asks = _asks(mine, local)
    answers = probes.from_vm(source, list(dict.fromkeys(p.address for p in mine)), asks)
    results = []
    for probe in mine:
        answer = answers[probe.address]
        echo = answer.echo if asks.get(probe.address) and probe.expected else None
        seen = Seen(answer.replied, answer.ttls, _identify(answer, source, topology), echo)
        results.append(ProbeResult.of(probe, seen))
    return results


def run(fabric: Fabric, topology: Topology, host: str | None = None) -> CheckResult:
    """The whole lab's matrix; with ``host``, only the probes from that host's VMs.

    With ``host`` this runs on a real (or Vagrant) host whose VMs `lab guests`
    made: the GRE capture is on the host's uplink here, and only this host's VMs run
    the whoami service (a routed reply from another host's VM is then told by its TTL,
    not its name) and TCP is tried only between them.
    """
    vms = {vm.name: vm for vm in topology.vms}
    local = {vm.name for vm in topology.vms if host is None or vm.host == host}
    matrix = [p for p in expect.matrix(topology) if p.source in local]
    directory = lab_dir(topology.prefix)
    directory.mkdir(parents=True, exist_ok=True)
    captures = [_Capture(h.netns if host is None else None, h.uplink,
                         directory / f"{h.name}.pcap")
                for h in topology.hosts if host is None or h.name == host]
    try:
        with probes.WhoamiServers([vms[name] for name in sorted(local)]), \
                ThreadPoolExecutor(max_workers=max(1, len(local))) as pool:
            batches = pool.map(lambda s: _from(vms[s], [p for p in matrix if p.source == s],
                                               topology, local), sorted(local))
            results = [result for batch in batches for result in batch]
    finally:
        for capture in captures:
            capture.stop()
    judged = wire.judge(fabric, topology, wire.expected_keys(fabric, topology, host),
                        [c.path for c in captures])
    order = {vm.name: index for index, vm in enumerate(topology.vms)}
    results.sort(key=lambda r: (order[r.source], order.get(r.target, len(order))))
    return CheckResult(results, judged)


def table(result: CheckResult) -> list[str]:
    """The check as the lines `lab check` prints: one per probe, the wire, a summary."""
    rows = [("from", "to", "address", "expected", "observed", "tcp", "")]
    for p in result.probes:
        rows.append((p.source, p.target, p.address, _expected(p), _observed(p),
                     {True: "ok", False: "FAILED", None: "-"}[p.tcp],
                     "ok" if p.ok else "MISMATCH: " + "; ".join(p.problems)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    checked = result.wire
    lines.append("")
    hashed = f" + {checked.flow_ids_seen} hashed FlowIDs" if checked.flow_ids_seen else ""
    lines.append(f"underlay: {checked.packets} GRE packets; keys seen "
                 f"{', '.join(checked.keys_seen)}{hashed} "
                 f"(expected {', '.join(checked.keys_expected)})"
                 f"; every key its destination's VSID, K=1 C=0 S=0 protocol 0x6558: "
                 f"{'ok' if checked.ok else 'MISMATCH'}")
    lines += [f"  {problem}" for problem in checked.problems]
    failed = sum(not p.ok for p in result.probes)
    lines.append(f"{len(result.probes)} probes, {failed} mismatches: "
                 f"{'all green' if result.ok else 'FAILED'}")
    return lines


def _expected(p: ProbeResult) -> str:
    if p.outcome == Outcome.ISOLATED:
        return "isolated"
    ttl = f", ttl {p.expected_ttl}" if p.expected_ttl is not None else ""
    return f"{p.outcome}{ttl}"


def _observed(p: ProbeResult) -> str:
    if not p.replied:
        return f"no reply (ARP or TCP answered by {p.answered_by})" if p.answered_by \
            else "no reply"
    who = f"answered by {p.answered_by}" if p.answered_by else "answered (unidentified)"
    ttl = f", ttl {'/'.join(map(str, sorted(set(p.ttl))))}" if p.ttl else ""
    return f"{'reached' if p.observed else who}{ttl}"
