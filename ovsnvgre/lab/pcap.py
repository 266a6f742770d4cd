"""Read GRE headers out of a pcap file written by tcpdump (no third-party parser).

The outer IP header is read by the underlay's address family (family.py).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from ovsnvgre import family

LINKTYPE_ETHERNET = 1


@dataclass(frozen=True)
class GreHeader:
    """The GRE header of one captured packet (RFC 2784, RFC 2890), and what it carries."""

    checksum_present: bool
    key_present: bool
    sequence_present: bool
    version: int
    protocol: int
    key: int | None
    inner: bytes


def gre_packets(path: Path) -> list[GreHeader]:
    """Every GRE packet of the pcap file at ``path`` (Ethernet link type), in order."""
    data = path.read_bytes()
    if len(data) < 24:
        return []
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    assert linktype == LINKTYPE_ETHERNET, f"unexpected link type {linktype}"  # noqa: S101 - an invariant the code above guarantees, not input checking
    packets = []
    offset = 24
    while offset + 16 <= len(data):
        _, _, captured, _ = struct.unpack(endian + "IIII", data[offset:offset + 16])
        frame = data[offset + 16:offset + 16 + captured]
        offset += 16 + captured
        header = _gre(frame)
        if header is not None:
            packets.append(header)
    return packets


def _gre(frame: bytes) -> GreHeader | None:
    gre = family.IPV4.outer_payload(frame)
    if gre is None or len(gre) < 4:
        return None
    flags, protocol = struct.unpack("!HH", gre[:4])
    checksum, key_bit, seq = bool(flags & 0x8000), bool(flags & 0x2000), bool(flags & 0x1000)
    offset = 4 + (4 if checksum else 0)
    key = struct.unpack("!I", gre[offset:offset + 4])[0] if key_bit else None
    offset += 4 if key_bit else 0
    offset += 4 if seq else 0
    return GreHeader(checksum, key_bit, seq, flags & 0x7, protocol, key, gre[offset:])
