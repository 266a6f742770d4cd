"""An independent NVGRE endpoint for the tests: scapy frames over a raw IPv4 socket.

It plays a Hyper-V host: run inside the peer's network namespace (``ip netns exec
NS python nvgre_peer.py < probes.json``), it sends each probe - an ICMP echo request
from a VM of the peer, inside NVGRE (RFC 7637: GRE with K=1, protocol 0x6558, the key
given) - to the host under test, and reads the GRE packets that come back on the same
raw socket (the kernel hands a raw socket of protocol 47 every GRE packet the
namespace receives).  It prints one JSON object: per probe, whether an echo reply
with its identifier came back and, for each such reply, its outer and GRE header.

Input (JSON on stdin)::

    {"remote": "198.51.100.11", "timeout": 1.0, "tries": 5,
     "probes": [{"key": 1280298, "src_mac": "...", "dst_mac": "...",
                 "src_ip": "10.0.0.2", "dst_ip": "10.0.0.1", "ident": 7}]}

A probe may name a ``source``: an address of the namespace to send it from (the
outer IPv4 source), as a host that is no peer of the receiver would; its replies,
if any, are still read on the one unbound socket, which receives every GRE packet.

A probe is sent up to ``tries`` times, each time waiting up to ``timeout`` seconds
for its reply: the first frame towards a new peer can go while the switch still
resolves the underlay next hop.  ``tries`` 1 and a probe nobody answers costs one
``timeout``.  Bounded: the whole run ends after tries * timeout per probe at most.
"""

from __future__ import annotations

import json
import socket
import sys
import time

from scapy.layers.inet import GRE, ICMP, IP
from scapy.layers.l2 import Ether

IPPROTO_GRE = 47
ETH_P_TEB = 0x6558  # transparent Ethernet bridging (RFC 7637 section 4)


def frame(probe: dict, sequence: int) -> bytes:
    """The GRE header and inner frame of one echo request (the kernel adds the outer IP)."""
    inner = (Ether(src=probe["src_mac"], dst=probe["dst_mac"])
             / IP(src=probe["src_ip"], dst=probe["dst_ip"], ttl=64)
             / ICMP(type=8, id=probe["ident"], seq=sequence) / (b"nvgre-peer" * 4))
    return bytes(GRE(key_present=1, key=probe["key"], proto=ETH_P_TEB) / inner)


def reply_of(packet: bytes) -> dict | None:
    """The fields of a received GRE packet that carries an ICMP echo reply, or None."""
    outer = IP(packet)
    if not outer.haslayer(GRE):
        return None
    gre = outer[GRE]
    inner = gre.payload
    if not isinstance(inner, Ether) or not inner.haslayer(ICMP):
        return None
    icmp = inner[ICMP]
    if icmp.type != 0:
        return None
    return {"ident": icmp.id, "outer_src": outer.src, "outer_dst": outer.dst,
            "key_present": bool(gre.key_present), "key": gre.key,
            "checksum_present": bool(gre.chksum_present),
            "sequence_present": bool(gre.seqnum_present), "version": gre.version,
            "protocol": gre.proto, "inner_src_mac": inner.src, "inner_dst_mac": inner.dst,
            "inner_src_ip": inner[IP].src, "inner_dst_ip": inner[IP].dst}


def run(request: dict) -> dict:
    """Send every probe and collect its replies (see the module docstring)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_GRE)
    sock.settimeout(0.05)
    senders: dict[str, socket.socket] = {}
    replies: dict[int, list[dict]] = {}
    results = []
    try:
        for probe in request["probes"]:
            sender = sock
            if probe.get("source"):
                if probe["source"] not in senders:
                    senders[probe["source"]] = socket.socket(socket.AF_INET, socket.SOCK_RAW,
                                                             IPPROTO_GRE)
                    senders[probe["source"]].bind((probe["source"], 0))
                sender = senders[probe["source"]]
            sent = 0
            for attempt in range(request.get("tries", 1)):
                sender.sendto(frame(probe, attempt), (request["remote"], 0))
                sent += 1
                deadline = time.monotonic() + request.get("timeout", 1.0)
                while time.monotonic() < deadline and not replies.get(probe["ident"]):
                    _receive(sock, request["remote"], replies)
                if replies.get(probe["ident"]):
                    break
            results.append({**probe, "sent": sent})
        # A reply that came late (while a later probe waited) counts too.
        for result in results:
            result["replies"] = replies.get(result["ident"], [])
    finally:
        sock.close()
        for sender in senders.values():
            sender.close()
    return {"probes": results}


def _receive(sock: socket.socket, remote: str, replies: dict[int, list[dict]]) -> None:
    try:
        packet, (source, _) = sock.recvfrom(65535)
    except TimeoutError:
        return
    if source != remote:
        return
    reply = reply_of(packet)
    if reply is not None:
        replies.setdefault(reply["ident"], []).append(reply)


if __name__ == "__main__":
    json.dump(run(json.load(sys.stdin)), sys.stdout)
