"""The address-family seam: everything that differs between an IPv4 and an IPv6 underlay.

The rest of ovsnvgre asks the family of a Provider Address for these facts and
frames instead of assuming IPv4:

- the outer IP header of a tunnelled frame (bytes), and so the NVGRE overhead;
- how a PA is written into a tunnel port's name;
- the frame that asks a next hop for its MAC (ARP request / Neighbour Solicitation)
  and how its answer reads;
- the frame that announces an address that moved to another MAC (gratuitous ARP /
  unsolicited Neighbour Advertisement);
- the echo request that proves a routed address answers (ICMP / ICMPv6), with the
  socket it goes out of;
- how a captured frame's outer header is read to find the GRE header.

Only IPv4 is implemented: an IPv6 underlay is a second ``UnderlayFamily`` here, and
the fabric's PA validation letting it through.  Pure: frames are built and parsed
as bytes; the sockets live in safe/probe.py and netlink.py.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass
from typing import Protocol

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ETH_HEADER = 14          # bytes: destination, source, EtherType
GRE_WITH_KEY = 8         # bytes: flags/version, protocol type, key (RFC 2890)
ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
IPPROTO_GRE = 47
BROADCAST_MAC = b"\xff" * 6


class UnderlayFamily(Protocol):
    """What an underlay address family has to provide (see the module docstring)."""

    version: int
    outer_header: int  # bytes of the outer IP header of an NVGRE frame
    ethertype: int     # of the outer IP header
    min_vm_mtu: int    # bytes: the smallest MTU the family's CAs need

    @property
    def overhead(self) -> int:
        """Bytes NVGRE adds to a VM's frame: outer IP + GRE with key + inner Ethernet."""
        ...

    def pa_text(self, pa: IPAddress) -> str:
        """The PA as it appears in a tunnel port name (fixed width)."""
        ...

    def solicit(self, mac: bytes, sender: IPAddress | None, target: IPAddress) -> bytes:
        """An Ethernet frame asking who has ``target``; ``sender`` None: unspecified."""
        ...

    def solicited_answer(self, frame: bytes) -> IPAddress | None:
        """The address an answer to ``solicit`` is for, or None for any other frame."""
        ...

    def announcement(self, mac: bytes, address: IPAddress) -> bytes:
        """An Ethernet frame telling the link that ``address`` is now at ``mac``."""
        ...

    @property
    def echo_socket(self) -> tuple[int, int, int]:
        """(family, type, protocol) of the raw socket that carries the echo messages."""
        ...

    def echo_request(self, ident: int, sequence: int) -> bytes:
        """An echo request message (without IP header) for ``echo_socket``."""
        ...

    def echo_reply_from(self, packet: bytes, ident: int) -> bool:
        """Whether ``packet`` (as an ``echo_socket`` receives it) answers our echo ``ident``."""
        ...

    def outer_payload(self, frame: bytes) -> bytes | None:
        """The GRE header and what follows it in a captured Ethernet frame, or None."""
        ...


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


ARP_REQUEST, ARP_REPLY = 1, 2
ECHO_PAYLOAD = b"ovsnvgre underlay probe"


@dataclass(frozen=True)
class _IPv4:
    """IPv4 underlays: ARP (RFC 826), gratuitous ARP (RFC 5227), ICMP echo (RFC 792)."""

    version: int = 4
    outer_header: int = 20
    ethertype: int = ETH_P_IP
    min_vm_mtu: int = 68  # RFC 791

    @property
    def overhead(self) -> int:
        return self.outer_header + GRE_WITH_KEY + ETH_HEADER

    def pa_text(self, pa: IPAddress) -> str:
        return f"{int(pa):08x}"

    def _arp(self, mac: bytes, op: int, sender: bytes, target_mac: bytes, target: bytes
             ) -> bytes:
        return (BROADCAST_MAC + mac + struct.pack("!H", ETH_P_ARP)
                + struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, op)
                + mac + sender + target_mac + target)

    def solicit(self, mac: bytes, sender: IPAddress | None, target: IPAddress) -> bytes:
        source = sender.packed if sender is not None else b"\x00" * 4
        return self._arp(mac, ARP_REQUEST, source, b"\x00" * 6, target.packed)

    def solicited_answer(self, frame: bytes) -> IPAddress | None:
        if len(frame) < 42 or frame[12:14] != struct.pack("!H", ETH_P_ARP):
            return None
        _, ptype, hlen, plen, op = struct.unpack("!HHBBH", frame[14:22])
        if ptype != ETH_P_IP or hlen != 6 or plen != 4 or op != ARP_REPLY:
            return None
        return ipaddress.IPv4Address(frame[28:32])

    def announcement(self, mac: bytes, address: IPAddress) -> bytes:
        # A gratuitous ARP request: sender = target = the address.
        return self._arp(mac, ARP_REQUEST, address.packed, b"\x00" * 6, address.packed)

    @property
    def echo_socket(self) -> tuple[int, int, int]:
        return (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)

    def echo_request(self, ident: int, sequence: int) -> bytes:
        header = struct.pack("!BBHHH", 8, 0, 0, ident, sequence)
        return (struct.pack("!BBHHH", 8, 0, _checksum(header + ECHO_PAYLOAD), ident, sequence)
                + ECHO_PAYLOAD)

    def echo_reply_from(self, packet: bytes, ident: int) -> bool:
        header = (packet[0] & 0x0F) * 4  # a raw IPv4 socket hands over the IP header too
        if len(packet) < header + 8:
            return False
        icmp_type, _, _, reply_ident, _ = struct.unpack("!BBHHH", packet[header:header + 8])
        return icmp_type == 0 and reply_ident == ident

    def outer_payload(self, frame: bytes) -> bytes | None:
        if len(frame) < ETH_HEADER + 20 or struct.unpack("!H", frame[12:14])[0] != ETH_P_IP:
            return None
        ip = frame[ETH_HEADER:]
        if ip[9] != IPPROTO_GRE:
            return None
        return ip[(ip[0] & 0x0F) * 4:]


IPV4: UnderlayFamily = _IPv4()

ETH_P_IPV6 = 0x86DD
IPPROTO_ICMPV6 = 58
ALL_NODES = ipaddress.IPv6Address("ff02::1")


def unsolicited_na(mac: bytes, address: ipaddress.IPv6Address) -> bytes:
    """An unsolicited Neighbour Advertisement (RFC 4861 section 7.2.6) to all nodes:
    ``address`` is now at ``mac`` (Override set, with the target link-layer option)."""
    icmp = (struct.pack("!BBHI", 136, 0, 0, 0x20000000) + address.packed
             + struct.pack("!BB", 2, 1) + mac)
    pseudo = address.packed + ALL_NODES.packed + struct.pack("!I3xB", len(icmp),
                                                             IPPROTO_ICMPV6)
    icmp = icmp[:2] + struct.pack("!H", _checksum(pseudo + icmp)) + icmp[4:]
    ipv6 = (struct.pack("!IHBB", 6 << 28, len(icmp), IPPROTO_ICMPV6, 255) + address.packed
            + ALL_NODES.packed)
    return b"\x33\x33\x00\x00\x00\x01" + mac + struct.pack("!H", ETH_P_IPV6) + ipv6 + icmp


def announcement(mac: bytes, address: IPAddress) -> bytes:
    """The frame that tells a link ``address`` moved to ``mac``: a gratuitous ARP for
    IPv4, an unsolicited Neighbour Advertisement for IPv6 (any address on the uplink
    or the tep port, whatever the underlay's own family)."""
    if address.version == 4:
        return IPV4.announcement(mac, address)
    assert isinstance(address, ipaddress.IPv6Address)  # noqa: S101 - an invariant the code above guarantees, not input checking
    return unsolicited_na(mac, address)


def of(address: IPAddress | ipaddress.IPv4Interface | ipaddress.IPv6Interface
       ) -> UnderlayFamily:
    """The underlay family of a PA (or of any underlay address).

    Raises ValueError for IPv6, which no underlay supports yet (the fabric refuses
    an IPv6 PA before this is reached).
    """
    if address.version == 4:
        return IPV4
    raise ValueError(f"{address}: IPv6 underlays are not supported yet")
