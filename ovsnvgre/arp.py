"""Raw-socket reachability probes: ARP on one link, ICMP echo through the routing table.

ARP is what proves a next hop is there: gateways that drop ICMP still answer it.
Both need root (CAP_NET_RAW), as every command that changes the host does.
"""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import struct
import time
from collections.abc import Callable, Iterable

ETH_P_ARP = 0x0806
ARP_REQUEST, ARP_REPLY = 1, 2
RETRANSMIT = 0.2  # seconds between requests to a target that has not answered

IPv4 = ipaddress.IPv4Address


def arp_request(mac: bytes, sender: IPv4, target: IPv4) -> bytes:
    return (b"\xff" * 6 + mac + struct.pack("!H", ETH_P_ARP)
            + struct.pack("!HHBBH", 1, 0x0800, 6, 4, ARP_REQUEST)
            + mac + sender.packed + b"\x00" * 6 + target.packed)


def parse_reply(frame: bytes) -> IPv4 | None:
    """The sender address of an ARP reply, or None for any other frame."""
    if len(frame) < 42 or frame[12:14] != struct.pack("!H", ETH_P_ARP):
        return None
    _, ptype, hlen, plen, op = struct.unpack("!HHBBH", frame[14:22])
    if ptype != 0x0800 or hlen != 6 or plen != 4 or op != ARP_REPLY:
        return None
    return IPv4(frame[28:32])


def _collect(sock: socket.socket, wanted: set[IPv4], send: Callable[[IPv4, int], None],
             answer: Callable[[socket.socket], IPv4 | None], timeout: float) -> set[IPv4]:
    """Send to every target that has not answered, every RETRANSMIT seconds, and gather
    the answers until all are in or ``timeout`` runs out."""
    answered: set[IPv4] = set()
    deadline = time.monotonic() + timeout
    next_send, round_number = 0.0, 0
    while answered != wanted:
        now = time.monotonic()
        if now >= deadline:
            break
        if now >= next_send:
            round_number += 1
            for target in wanted - answered:
                try:
                    send(target, round_number)
                except OSError:
                    pass  # a link that is down, no route yet: the next round may go out
            next_send = now + RETRANSMIT
        ready, _, _ = select.select([sock], [], [], max(0.0, min(next_send, deadline)
                                                        - time.monotonic()))
        if ready:
            source = answer(sock)
            if source in wanted:
                answered.add(source)
    return answered


def arp(link: str, targets: dict[IPv4, IPv4 | None], timeout: float) -> set[IPv4]:
    """Which of ``targets`` (address -> our sender address, None for 0.0.0.0) answer ARP
    on ``link`` within ``timeout`` seconds."""
    if not targets:
        return set()
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    except OSError:
        return set()
    with sock:
        try:
            sock.bind((link, ETH_P_ARP))
        except OSError:
            return set()  # no such link (any more): nothing answers on it
        mac = sock.getsockname()[4][:6]

        def send(target: IPv4, _: int) -> None:
            sock.send(arp_request(mac, targets[target] or IPv4(0), target))

        return _collect(sock, set(targets), send, lambda s: parse_reply(s.recv(2048)),
                        timeout)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(ident: int, sequence: int) -> bytes:
    payload = b"ovsnvgre underlay probe"
    header = struct.pack("!BBHHH", 8, 0, 0, ident, sequence)
    return struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, sequence) + payload


def ping(targets: Iterable[IPv4], timeout: float) -> set[IPv4]:
    """Which of ``targets`` answer an ICMP echo, routed as the kernel routes them."""
    wanted = set(targets)
    if not wanted:
        return set()
    ident = os.getpid() & 0xFFFF
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    except OSError:
        return set()

    def send(target: IPv4, sequence: int) -> None:
        sock.sendto(echo_request(ident, sequence), (str(target), 0))

    def answer(receiving: socket.socket) -> IPv4 | None:
        packet, (source, _) = receiving.recvfrom(2048)
        header = (packet[0] & 0x0F) * 4
        icmp_type, _, _, reply_ident, _ = struct.unpack("!BBHHH", packet[header:header + 8])
        return IPv4(source) if icmp_type == 0 and reply_ident == ident else None

    with sock:
        return _collect(sock, wanted, send, answer, timeout)
