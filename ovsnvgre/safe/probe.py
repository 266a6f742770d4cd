"""Raw-socket reachability probes: ARP on one link, ICMP echo through the routing table.

ARP is what proves a next hop is there: gateways that drop ICMP still answer it.
Both need root (CAP_NET_RAW), as every command that changes the host does.  The
frames come from the underlay's address family (family.py); only the sockets are here.
"""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import time
from collections.abc import Callable, Iterable

from ovsnvgre import family

ETH_P_ARP = family.ETH_P_ARP
RETRANSMIT = 0.2  # seconds between requests to a target that has not answered

IPv4 = ipaddress.IPv4Address


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
    on ``link`` within ``timeout`` seconds.  A link that does not exist answers nothing."""
    if not targets:
        return set()
    ipv4 = family.IPV4
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
            sock.send(ipv4.solicit(mac, targets[target], target))

        def answer(receiving: socket.socket) -> IPv4 | None:
            source = ipv4.solicited_answer(receiving.recv(2048))
            return source if isinstance(source, IPv4) else None

        return _collect(sock, set(targets), send, answer, timeout)


def ping(targets: Iterable[IPv4], timeout: float) -> set[IPv4]:
    """Which of ``targets`` answer an ICMP echo within ``timeout`` seconds, routed as the
    kernel routes them."""
    wanted = set(targets)
    if not wanted:
        return set()
    ipv4 = family.IPV4
    ident = os.getpid() & 0xFFFF
    try:
        sock = socket.socket(*ipv4.echo_socket)
    except OSError:
        return set()

    def send(target: IPv4, sequence: int) -> None:
        sock.sendto(ipv4.echo_request(ident, sequence), (str(target), 0))

    def answer(receiving: socket.socket) -> IPv4 | None:
        packet, (source, _) = receiving.recvfrom(2048)
        return IPv4(source) if ipv4.echo_reply_from(packet, ident) else None

    with sock:
        return _collect(sock, wanted, send, answer, timeout)
