"""NVGRE facts (RFC 7637): the VSID range, the GRE key layout, overhead, port names.  Pure."""

from __future__ import annotations

import ipaddress

from ovsnvgre import family
from ovsnvgre.model import KeyLayout

# RFC 7637 section 3.2: 0x000000-0x000FFF and 0xFFFFFF are reserved.
VSID_MIN = 0x001000
VSID_MAX = 0xFFFFFE

# Every underlay today is IPv4 (fabric.py refuses other PAs): outer IPv4 20 + GRE
# with key 8 + inner Ethernet 14 = 42 bytes.  Code that knows the PA asks
# family.of(pa).overhead instead.
OVERHEAD = family.IPV4.overhead

# Linux IFNAMSIZ is 16 including the terminating NUL.
MAX_PORT_NAME = 15
MIN_VM_MTU = family.IPV4.min_vm_mtu
MIN_UNDERLAY_MTU = MIN_VM_MTU + OVERHEAD
MAX_MTU = 65535

# `tunnel_ports: flow`: the one GRE port towards every peer (remote_ip=flow, key=flow).
# "flow" holds letters that are no hex digit, so no per-peer port (`gre-` and a PA in
# hex) ever has this name, and switching modes never renames a row in place.
FLOW_PORT = "gre-flow"


def is_valid_vsid(vsid: int) -> bool:
    """Whether ``vsid`` is a VSID a tenant may use (RFC 7637 section 3.2: 4096-16777214)."""
    return VSID_MIN <= vsid <= VSID_MAX


def tunnel_key(vsid: int, layout: KeyLayout, flow_id: int = 0) -> int:
    """The 32-bit GRE key that carries ``vsid`` (RFC 7637 section 3.2).

    rfc7637 puts the VSID in the top 24 bits and the FlowID in the low 8;
    plain uses the VSID itself (only for fabrics that never meet a real NVGRE
    endpoint).  Raises ValueError for a reserved VSID or a FlowID over 8 bits.
    """
    if not is_valid_vsid(vsid):
        raise ValueError(f"VSID {vsid} is outside {VSID_MIN}-{VSID_MAX}")
    if layout == KeyLayout.RFC7637:
        if not 0 <= flow_id <= 0xFF:
            raise ValueError(f"FlowID {flow_id} does not fit in 8 bits")
        return vsid << 8 | flow_id
    if layout == KeyLayout.PLAIN:
        return vsid
    raise ValueError(f"unknown key layout {layout!r}")


def key_match(vsid: int, layout: KeyLayout) -> str:
    """The ``tun_id`` match of every received key of ``vsid`` (ovs-fields(7) syntax).

    rfc7637: the top 24 bits under the mask 0xffffff00, so any of the 256 FlowIDs
    matches (RFC 7637 section 3.2: the FlowID never selects the tenant); plain:
    the whole key.
    """
    key = tunnel_key(vsid, layout)
    if layout == KeyLayout.RFC7637:
        return f"tun_id={key:#x}/0xffffff00"
    return f"tun_id={key:#x}"


def vsid_of_key(key: int, layout: KeyLayout) -> int:
    """The VSID a receiver reads from a 32-bit key: the top 24 bits for rfc7637."""
    if layout == KeyLayout.RFC7637:
        return (key >> 8) & 0xFFFFFF
    if layout == KeyLayout.PLAIN:
        return key
    raise ValueError(f"unknown key layout {layout!r}")


def max_vm_mtu(underlay_mtu: int, underlay: family.UnderlayFamily = family.IPV4) -> int:
    """The largest VM MTU (bytes) whose frames still cross an ``underlay_mtu`` underlay."""
    return underlay_mtu - underlay.overhead


def tunnel_port_name(peer_pa: ipaddress.IPv4Address, vsid: int | None) -> str:
    """A deterministic port name of at most 15 characters.

    Per peer: ``gre-`` and the peer PA in hex (``gre-c0a8020b``).  Per
    (peer, VSID): ``g``, the PA in hex and the VSID in 6 hex digits
    (``gc0a8020b001389``).  The name depends on the PA and VSID only, so
    adding a host or a subnet never renames another port.
    """
    pa_text = family.of(peer_pa).pa_text(peer_pa)
    if vsid is None:
        return f"gre-{pa_text}"
    return f"g{pa_text}{vsid:06x}"


def receive_port_name(peer_pa: ipaddress.IPv4Address) -> str:
    """The name of the receive-only port towards ``peer_pa``: the per-peer port's name
    (``gre-`` and the PA in hex).

    ``per-vsid`` mode gives each peer one beside its fixed-key ports; it takes the
    frames whose FlowID is not 0 (see desired.receive_port).  It shares its name with
    the port per-peer mode uses: OVS refuses two `key=flow`-like ports to one peer
    (File exists), so switching modes changes that one row in place.
    """
    return tunnel_port_name(peer_pa, None)
