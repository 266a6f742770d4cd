"""What `lab check` reads on the underlay: every GRE packet of its capture, judged.

Each packet must be NVGRE (RFC 7637 section 3: K=1, C=0, S=0, version 0, protocol
0x6558) with one of the fabric's keys, and its key must be the VSID of the frame's
destination: the VSID of the VM whose MAC the inner frame is sent to (issue 18: a routed
frame crosses with the *destination* VSID's key), or, for a broadcast or multicast
frame, the VSID of the VM that sent it.  A frame for a gateway address never crosses:
the distributed router answers ARP and ICMP echo on the source host.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from pathlib import Path

from ovsnvgre import nvgre
from ovsnvgre.lab.expect import Outcome, matrix
from ovsnvgre.lab.pcap import GreHeader, gre_packets
from ovsnvgre.lab.topology import Topology
from ovsnvgre.model import Fabric, FlowId, KeyLayout

ETH_IPV4, ETH_ARP, ETH_VLAN = 0x0800, 0x0806, 0x8100


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
        """Whether every GRE packet was NVGRE with its destination's key, and every key
        that must cross did."""
        return not self.problems


def expected_keys(fabric: Fabric, topology: Topology, host: str | None = None) -> set[int]:
    """The keys that must appear on the wire: for every bridged or routed probe between
    two hosts, the target's VSID (the request) and the source's (the reply).

    Seen from one ``host``: only the probes that start or end there.
    """
    vms = {vm.name: vm for vm in topology.vms}
    keys = set()
    for probe in matrix(topology):
        if probe.outcome not in (Outcome.BRIDGED, Outcome.ROUTED):
            continue
        source, target = vms[probe.source], vms[probe.target]
        if source.host != target.host and (host is None or host in (source.host, target.host)):
            keys.add(nvgre.tunnel_key(target.vsid, fabric.overlay.key_layout))
            keys.add(nvgre.tunnel_key(source.vsid, fabric.overlay.key_layout))
    return keys


@dataclass(frozen=True)
class InnerFrame:
    """The parts of an inner Ethernet frame the check reads (MACs as ``02:00:...``)."""

    destination: str
    source: str
    # ARP's target protocol address, or IPv4's destination; None for anything else.
    target_ip: ipaddress.IPv4Address | None

    @property
    def flooded(self) -> bool:
        """Whether the frame goes to a group address (broadcast or multicast)."""
        return bool(int(self.destination[:2], 16) & 1)


def inner_frame(frame: bytes) -> InnerFrame | None:
    """The destination, source and target address of an Ethernet frame; None if cut short.

    ARP's target protocol address sits 24 bytes into the ARP packet (RFC 826),
    IPv4's destination 16 bytes into its header (RFC 791).
    """
    if len(frame) < 14:
        return None
    destination, source = (":".join(f"{b:02x}" for b in frame[i:i + 6]) for i in (0, 6))
    ethertype, offset = struct.unpack("!H", frame[12:14])[0], 14
    if ethertype == ETH_VLAN and len(frame) >= 18:
        ethertype, offset = struct.unpack("!H", frame[16:18])[0], 18
    at = {ETH_ARP: 24, ETH_IPV4: 16}.get(ethertype)
    target = None
    if at is not None and len(frame) >= offset + at + 4:
        target = ipaddress.IPv4Address(frame[offset + at:offset + at + 4])
    return InnerFrame(destination, source, target)


class _Judge:
    """The fabric's facts a GRE packet is judged against (built once per check)."""

    def __init__(self, fabric: Fabric, topology: Topology) -> None:
        self.layout: KeyLayout = fabric.overlay.key_layout
        self.keys = {nvgre.tunnel_key(s.vsid, self.layout)
                     for s in fabric.virtual_subnets.values()}
        # With a hashed FlowID the low 8 bits vary per flow: the VSID bits must be right;
        # with FlowID zero the whole key must be (RFC 7637 section 3.2).
        hashed = fabric.overlay.flow_id == FlowId.HASH and self.layout == KeyLayout.RFC7637
        self.ignored = 0xFF if hashed else 0
        self.vms_by_mac: dict[str, list[tuple[str, int]]] = {}
        self.domain_of: dict[int, str | None] = {}
        for vm in topology.vms:
            self.vms_by_mac.setdefault(vm.mac, []).append((vm.name, vm.vsid))
            self.domain_of[vm.vsid] = vm.routing_domain
        self.gateways = topology.gateways

    def problems(self, packet: GreHeader) -> list[str]:
        """Every way ``packet`` is not the NVGRE its destination needs."""
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
        if packet.key is not None and packet.key & ~self.ignored not in self.keys:
            flags.append(f"key {packet.key:#x} is no VSID key of the fabric")
        found = [f"GRE packet with {', '.join(flags)}"] if flags else []
        frame = inner_frame(packet.inner) if packet.protocol == 0x6558 else None
        if packet.key is None or frame is None:
            return found
        vsid = self.vsid(packet.key)
        return found + self._destination(packet.key, vsid, frame) + \
            self._gateway(packet.key, vsid, frame)

    def vsid(self, key: int) -> int:
        """The VSID a receiver reads from ``key`` (whatever the FlowID: RFC 7637 3.2)."""
        return nvgre.vsid_of_key(key & ~self.ignored, self.layout)

    def _destination(self, key: int, vsid: int, frame: InnerFrame) -> list[str]:
        if frame.flooded:
            if vsid not in {v for _, v in self.vms_by_mac.get(frame.source, [])}:
                return [f"key {key:#x} floods a frame from {frame.source}, which is no VM "
                        f"of VSID {vsid}"]
            return []
        owners = self.vms_by_mac.get(frame.destination, [])
        if not owners:
            return [f"key {key:#x} carries a frame to {frame.destination}, which is no VM's MAC"]
        if vsid not in {v for _, v in owners}:
            names = ", ".join(f"{name} (VSID {v})" for name, v in owners)
            return [f"key {key:#x} (VSID {vsid}) carries a frame to {names}"]
        return []

    def _gateway(self, key: int, vsid: int, frame: InnerFrame) -> list[str]:
        domain = self.domain_of.get(vsid)
        if domain is None or frame.target_ip not in self.gateways.get(domain, ()):
            return []
        return [f"key {key:#x}: a frame for {frame.target_ip}, a gateway of routing domain "
                f"{domain}, crossed the underlay"]


def judge(fabric: Fabric, topology: Topology, expected: set[int],
          paths: list[Path]) -> WireResult:
    """Every GRE packet of the captures at ``paths`` (one per host, named after it),
    judged; ``expected``: the keys that must have crossed (``expected_keys``)."""
    rules = _Judge(fabric, topology)
    result = WireResult(keys_expected=[f"{k:#x}" for k in sorted(expected)])
    seen: set[int] = set()  # without the FlowID when it is hashed
    flow_ids: set[int] = set()
    for path in paths:
        for packet in gre_packets(path):
            result.packets += 1
            if packet.key is not None:
                seen.add(packet.key & ~rules.ignored)
                flow_ids.add(packet.key & rules.ignored)
            for problem in rules.problems(packet):
                line = f"{path.stem}: {problem}"
                if line not in result.problems:
                    result.problems.append(line)
    result.keys_seen = [f"{k:#x}" for k in sorted(seen)]
    result.flow_ids_seen = len(flow_ids) if rules.ignored else 0
    for key in sorted(expected - seen):
        result.problems.append(f"no GRE packet with key {key:#x} crossed the underlay")
    return result
