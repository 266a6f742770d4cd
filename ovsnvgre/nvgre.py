"""NVGRE facts (RFC 7637): the VSID range, the GRE key layout, overhead, port names."""

from __future__ import annotations

import ipaddress

# RFC 7637 section 3.2: 0x000000-0x000FFF and 0xFFFFFF are reserved.
VSID_MIN = 0x001000
VSID_MAX = 0xFFFFFE

KEY_LAYOUTS = ("rfc7637", "plain")
TUNNEL_PORT_MODES = ("per-vsid", "per-peer")
DATAPATH_TYPES = ("system", "netdev")

# Outer IPv4 20 + GRE with key 8 + inner Ethernet 14.
OVERHEAD = 42

# Linux IFNAMSIZ is 16 including the terminating NUL.
MAX_PORT_NAME = 15
MIN_VM_MTU = 68  # the smallest IPv4 MTU (RFC 791)
MIN_UNDERLAY_MTU = MIN_VM_MTU + OVERHEAD
MAX_MTU = 65535


def is_valid_vsid(vsid: int) -> bool:
    return VSID_MIN <= vsid <= VSID_MAX


def tunnel_key(vsid: int, layout: str, flow_id: int = 0) -> int:
    """The 32-bit GRE key that carries ``vsid``.

    rfc7637 puts the VSID in the top 24 bits and the FlowID in the low 8;
    plain uses the VSID itself (only for fabrics that never meet a real NVGRE
    endpoint).
    """
    if not is_valid_vsid(vsid):
        raise ValueError(f"VSID {vsid} is outside {VSID_MIN}-{VSID_MAX}")
    if layout == "rfc7637":
        if not 0 <= flow_id <= 0xFF:
            raise ValueError(f"FlowID {flow_id} does not fit in 8 bits")
        return vsid << 8 | flow_id
    if layout == "plain":
        return vsid
    raise ValueError(f"unknown key layout {layout!r}")


def vsid_of_key(key: int, layout: str) -> int:
    """The VSID a receiver reads from a key: the top 24 bits for rfc7637."""
    if layout == "rfc7637":
        return (key >> 8) & 0xFFFFFF
    if layout == "plain":
        return key
    raise ValueError(f"unknown key layout {layout!r}")


def max_vm_mtu(underlay_mtu: int) -> int:
    return underlay_mtu - OVERHEAD


def tunnel_port_name(peer_pa: ipaddress.IPv4Address, vsid: int | None) -> str:
    """A deterministic port name of at most 15 characters.

    Per peer: ``gre-`` and the peer PA in hex (``gre-c0a8020b``).  Per
    (peer, VSID): ``g``, the PA in hex and the VSID in 6 hex digits
    (``gc0a8020b001389``).  The name depends on the PA and VSID only, so
    adding a host or a subnet never renames another port.
    """
    pa_hex = f"{int(peer_pa):08x}"
    if vsid is None:
        return f"gre-{pa_hex}"
    return f"g{pa_hex}{vsid:06x}"
