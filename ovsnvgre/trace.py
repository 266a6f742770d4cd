"""`ovsnvgre trace`: a packet built from the fabric, through ofproto/trace, in fabric terms.

Pure: `probe` builds the flow to trace from the fabric, `parse` reads what
`ovs-appctl ofproto/trace` prints, and `verdict` says what happened to the
packet in the words of the fabric (VMs, hosts, VSIDs, keys).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from ovsnvgre import external, nvgre, pipeline
from ovsnvgre.desired import DOMAIN_KEY, PEER_KEY, VM_KEY, VSID_KEY, DesiredHost, Role
from ovsnvgre.errors import UsageError
from ovsnvgre.model import Fabric, FlowId, Vm

BROADCAST = "ff:ff:ff:ff:ff:ff"
PROTOCOLS = ("icmp", "arp", "tcp:PORT", "udp:PORT")


@dataclass(frozen=True)
class Probe:
    """The packet to trace: from which VM, to what, and the ofproto/trace flow."""

    source: Vm
    target: str                 # what the user asked for: a VM name or an address
    destination: Vm | None      # the VM the packet is for, if the fabric has one
    proto: str
    flow: str
    # The source's routing domain when the packet goes to its distributed router (IPv4
    # off its subnet, or to a gateway, or ARP for its gateway); None when bridged.
    router: str | None = None
    address: str = ""           # the destination address, as the packet carries it


@dataclass(frozen=True)
class Parsed:
    """What ofproto/trace printed, read: each output, the final flow, the last table of
    the integration bridge the packet went through."""

    outputs: list[tuple[str, int | None]]  # (port, tun_id set when it was sent)
    final_flow: str
    last_table: int | None
    text: str = field(repr=False, default="")
    # The tun_dst set when each output was sent (the peer's PA through the flow
    # port), or None: one per output, in the same order.
    tun_dsts: list[str | None] = field(default_factory=list)

    @property
    def ports(self) -> set[str]:
        """Every port the packet went out of."""
        return {port for port, _ in self.outputs}


def probe(fabric: Fabric, source_name: str, target: str, proto: str = "icmp",
          ttl: int = 64) -> Probe:
    """The packet from VM ``source_name`` to ``target`` (a VM name or an address) with
    ``proto`` (icmp, arp, tcp:PORT, udp:PORT) and, for IPv4, ``ttl``; raises UsageError
    for what the fabric does not know.

    As the VM would send it: to the destination's MAC on its own subnet, to the
    distributed router's MAC (``overlay.router_mac``) off it when its subnet has a
    routing domain."""
    source = fabric.vms.get(source_name)
    if source is None:
        raise UsageError(f"{fabric.source}: no VM {source_name!r} in the fabric")
    if not 0 <= ttl <= 255:
        raise UsageError(f"--ttl {ttl}: expected 0-255")
    destination, address = _destination(fabric, source, target)
    mac, ca = source.mac, source.ca.ip
    head = f"in_port={source.port},dl_src={mac}"
    subnet = fabric.virtual_subnets[source.virtual_subnet]
    if proto == "arp":
        if address.version != 4:
            raise UsageError("--proto arp needs an IPv4 destination")
        return Probe(source, target, destination, proto,
                     f"{head},dl_dst={BROADCAST},arp,arp_op=1,arp_spa={ca},"
                     f"arp_tpa={address},arp_sha={mac}",
                     subnet.routing_domain if address == subnet.gateway else None, str(address))
    dst_mac = destination.mac if destination else BROADCAST
    if address.version != ca.version:
        raise UsageError(f"{source.name}'s CA {ca} and {address} are not the same IP version")
    router = None
    if subnet.routing_domain is not None and (address == subnet.gateway
                                              or address not in source.ca.network):
        router, dst_mac = subnet.routing_domain, fabric.overlay.router_mac
    if address.version == 4:
        l3 = f"nw_src={ca},nw_dst={address},nw_ttl={ttl}"
        kinds = {"icmp": "icmp,icmp_type=8", "tcp": "tcp", "udp": "udp"}
    else:
        l3 = f"ipv6_src={ca},ipv6_dst={address}"
        kinds = {"icmp": "icmp6,icmpv6_type=128", "tcp": "tcp6", "udp": "udp6"}
    name, _, port = proto.partition(":")
    if name not in kinds or (name == "icmp") == bool(port) or (port and not port.isdigit()) \
            or (port and not 0 < int(port) < 65536):
        raise UsageError(f"--proto {proto!r}: expected one of {', '.join(PROTOCOLS)}")
    # tp_dst is tcp_dst to ofproto/trace's parser ("prerequisites not met" for UDP).
    l4 = f",{name}_dst={port}" if port else ""
    return Probe(source, target, destination, proto,
                 f"{head},dl_dst={dst_mac},{kinds[name]},{l3}{l4}", router, str(address))


def _destination(fabric: Fabric, source: Vm, target: str) -> tuple[Vm | None, Any]:
    """The VM a target names (by name, or by CA: the source's own VSID first, then its
    routing domain; none for a gateway address of its domain: the router answers)."""
    if target in fabric.vms:
        vm = fabric.vms[target]
        return vm, vm.ca.ip
    try:
        address = ipaddress.ip_address(target)
    except ValueError:
        raise UsageError(f"--to {target!r} is neither a VM of the fabric nor an IP "
                         "address") from None
    domain = fabric.routing_domain_of(source)
    if domain is not None and any(s.gateway == address for s in fabric.subnets_in(domain)):
        return None, address
    holders = [vm for vm in fabric.vms.values() if vm.ca.ip == address and vm is not source]
    same = [vm for vm in holders if fabric.vsid_of(vm) == fabric.vsid_of(source)]
    routed = [vm for vm in holders if domain is not None
              and fabric.routing_domain_of(vm) == domain]
    return (same or routed or holders or [None])[0], address


@dataclass(frozen=True)
class TraceResult:
    """`ovsnvgre trace`'s answer: the probe, one sentence, each output, the raw trace."""

    probe: Probe
    verdict: str
    outputs: list[dict[str, Any]]
    raw: str

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data (`trace --json`), without the raw trace."""
        return {"host": self.probe.source.host, "from": self.probe.source.name,
                "to": self.probe.target,
                "destination": self.probe.destination.name if self.probe.destination else None,
                "proto": self.probe.proto, "flow": self.probe.flow, "verdict": self.verdict,
                "outputs": [{k: v for k, v in o.items() if k != "text"} for o in self.outputs]}


# How ofproto/trace shows what flow.FLOW_ID_HASH wrote into the key's low 8 bits.
_HASHED_FLOW_ID = "-> NXM_NX_TUN_ID[0..7] is now "


def parse(text: str, names: dict[int, str]) -> Parsed:
    """What ofproto/trace says happened: every output (with the key set before it)."""
    first = text.split("\n", 1)[0]
    in_port = re.search(r"in_port=(\w[\w.-]*)", first)
    outputs: list[tuple[str, int | None]] = []
    tun_dsts: list[str | None] = []
    tun_id = None
    tun_dst = None
    last_table = None
    bridges = 0
    for line in text.splitlines():
        stripped = line.strip()
        # The integration bridge's tables only: a tunnelled frame goes on through the
        # underlay bridge's own (bridge("br0"), table 0), which is no stage of ours.
        bridges += stripped.startswith('bridge("')
        table = re.match(r"^(\d+)\. ", stripped)
        if table and bridges <= 1:
            last_table = int(table.group(1))
        if stripped.startswith("set_field:") and stripped.endswith("->tun_id"):
            tun_id = int(stripped[len("set_field:"):-len("->tun_id")], 16)
        elif stripped.startswith("set_field:") and stripped.endswith("->tun_dst"):
            tun_dst = stripped[len("set_field:"):-len("->tun_dst")]
        elif stripped.startswith(_HASHED_FLOW_ID) and tun_id is not None:
            # The FlowID the hash gave this packet (overlay.flow_id: hash).
            tun_id = (tun_id & ~0xFF) | int(stripped[len(_HASHED_FLOW_ID):], 16)
        elif stripped.startswith("output:"):
            port = stripped[len("output:"):]
            outputs.append((names.get(int(port), port) if port.isdigit() else port, tun_id))
            tun_dsts.append(tun_dst)
        elif "skipping output to input port" in stripped:
            outputs.pop()  # OVS never sends a frame back where it came from
            tun_dsts.pop()
        elif stripped == "IN_PORT" and in_port:
            port = in_port.group(1)
            outputs.append((names.get(int(port), port) if port.isdigit() else port, tun_id))
            tun_dsts.append(tun_dst)
    final = re.search(r"^Final flow: (.*)$", text, re.M)
    return Parsed(outputs, final.group(1) if final else "", last_table, text, tun_dsts)


def verdict(desired: DesiredHost, the_probe: Probe, parsed: Parsed,
            host_addresses: frozenset[str] | None = None) -> tuple[str, list[dict]]:
    """One sentence in the fabric's terms, and each output described.  ``host_addresses``:
    this host's own IPv4 addresses when it is the gateway host of the source's routing
    domain (its namespace drops them); None elsewhere, where they cannot be read."""
    fabric = desired.fabric
    source, destination = the_probe.source, the_probe.destination
    vsid = fabric.vsid_of(source)
    host_of_pa = {str(host.pa.ip): name for name, host in fabric.hosts.items()}
    tun_dsts = parsed.tun_dsts or [None] * len(parsed.outputs)
    described = [_describe_output(desired, port, tun_id, tun_dst, host_of_pa)
                 for (port, tun_id), tun_dst in zip(parsed.outputs, tun_dsts, strict=True)]
    if the_probe.router is not None:
        return _routed(fabric, the_probe, parsed, described, host_addresses), described
    if the_probe.proto == "arp" and parsed.outputs == [(source.port, None)]:
        answer = re.search(r"arp_sha=([0-9a-f:]{17})", parsed.final_flow)
        mac = answer.group(1) if answer else "?"
        return (f"answered by the ARP responder: {the_probe.target} is at {mac}"
                + _owner_of(fabric, mac), described)
    if destination is not None and fabric.vsid_of(destination) != vsid:
        reached = any(o.get("vm") == destination.name for o in described)
        if not reached:
            flooded = _list(described)
            return (f"dropped: different virtual subnet ({destination.name} is in VSID "
                    f"{fabric.vsid_of(destination)}, {source.name} in {vsid})"
                    + (f"; sent only within VSID {vsid}: {flooded}" if flooded else ""),
                    described)
    if not described:
        return _dropped(fabric, the_probe, parsed), described
    if destination is not None and len(described) == 1:
        out = described[0]
        if out["kind"] == "vm" and out.get("vm") == destination.name:
            return f"delivered to {destination.name} on port {out['port']}", described
        if out["kind"] == "tunnel" and destination.host == out.get("peer"):
            via = f" (tun_dst {out['tun_dst']})" if out.get("tun_dst") else ""
            return (f"delivered to {destination.name} via tunnel to {out['peer']}{via} with "
                    f"key {_key_words(out)} (port {out['port']})", described)
    return f"flooded within VSID {vsid}: {_list(described)}", described


def _dropped(fabric: Fabric, the_probe: Probe, parsed: Parsed) -> str:
    """``dropped by <stage>: <the stage's drop reason>``, filled in with the probe's facts."""
    table = parsed.last_table
    stage = pipeline.stage_of(table) if table is not None else None
    where = pipeline.table_name(table) if table is not None else "the pipeline"
    source = the_probe.source
    why = (stage.drop_reason.format(source=source.name, vsid=fabric.vsid_of(source),
                                    domain=the_probe.router, address=the_probe.address)
           if stage is not None else "no flow took it")
    return f"dropped by {where}: {why}"


def _routed(fabric: Fabric, the_probe: Probe, parsed: Parsed, described: list[dict],
            host_addresses: frozenset[str] | None) -> str:
    """The verdict on a packet handed to the source's distributed router: answered by the
    router, routed to a VM (locally or through a tunnel with the destination's key), or
    dropped for a reason: the TTL, another routing domain, no subnet of the domain."""
    source, destination, domain = the_probe.source, the_probe.destination, the_probe.router
    stage = pipeline.table_name(parsed.last_table) if parsed.last_table is not None else ""
    router = f"{domain}'s distributed router"
    if stage == "gateway" and parsed.outputs == [(source.port, None)]:
        gateway = next((s for s in fabric.subnets_in(domain or "")
                        if str(s.gateway) == the_probe.address), None)
        of = f"the gateway of {gateway.name}" if gateway else "a gateway"
        if the_probe.proto == "arp":
            return (f"answered by {router}: {the_probe.address} is at "
                    f"{fabric.overlay.router_mac} ({of})")
        return f"answered by {router}: {the_probe.address} ({of}) replies to the ping"
    if stage == "external" and len(described) == 1:
        return _external(fabric, the_probe, described[0], host_addresses)
    if stage == "route" and len(described) == 1 and described[0]["kind"] in ("vm", "tunnel"):
        out = described[0]
        reached = out.get("vm") or next(
            (vm.name for vm in fabric.vms_in(out["vsid"])
             if vm.host == out["peer"] and str(vm.ca.ip) == the_probe.address), "?")
        via = f" (tun_dst {out['tun_dst']})" if out.get("tun_dst") else ""
        how = (f"on port {out['port']}" if out["kind"] == "vm"
               else f"via tunnel to {out['peer']}{via} with key {_key_words(out)}")
        text = f"routed by {router} to {reached} ({the_probe.address}) {how}"
        if destination is not None and destination.name != reached:
            text += f"; {destination.name} {_other_domain(fabric, destination, domain)}"
        return text
    if not described and stage == "route":
        if destination is not None and fabric.routing_domain_of(destination) != domain:
            return (f"dropped by route: other routing domain: {destination.name} "
                    f"{_other_domain(fabric, destination, domain)}")
        subnet = next((s for s in fabric.subnets_in(domain or "") if s.prefix is not None
                       and ipaddress.ip_address(the_probe.address) in s.prefix), None)
        if subnet is not None:
            return (f"dropped by route: no VM of subnet {subnet.name} ({subnet.prefix}) has "
                    f"{the_probe.address}")
    if not described:
        return _dropped(fabric, the_probe, parsed)
    return f"sent by {router} to: {_list(described)}"


def _external(fabric: Fabric, the_probe: Probe, out: dict[str, Any],
              host_addresses: frozenset[str] | None) -> str:
    """``routed to the external gateway on host3, SNAT 203.0.113.10 (...)``: a packet for
    outside the domain, on its way to the domain's namespace (issue 19); or ``dropped by
    the external gateway on host3: ...`` for an address its namespace's filter drops."""
    domain = fabric.routing_domains[the_probe.router or ""]
    gateway = domain.external
    if gateway is None:
        return f"sent by {domain.name}'s distributed router to: {out['text']}"
    blocked = external.why_blocked(fabric, domain, the_probe.address)
    if blocked is None and host_addresses and the_probe.address in host_addresses:
        blocked = f"an address of host {gateway.host} itself"
    if blocked is not None:
        return (f"dropped by the external gateway on {gateway.host}: {the_probe.address} is "
                f"{blocked}, which no VM of {domain.name} reaches (its namespace's filter)")
    floating = gateway.floating_ips.get(the_probe.source.name)
    nat = f"floating IP {floating}" if floating else f"SNAT {gateway.address.ip}"
    how = (f"via tunnel to {out['peer']} with key {_key_words(out)}" if out["kind"] == "tunnel"
           else f"on port {out['port']}")
    unknown = "" if host_addresses is not None else (
        f"; unless it is an address of {gateway.host} itself, which its namespace drops: "
        f"those are read on {gateway.host} only")
    return (f"routed to the external gateway on {gateway.host}, {nat} ({the_probe.address} "
            f"is outside every subnet of {domain.name}; {how}{unknown})")


def _other_domain(fabric: Fabric, vm: Vm, domain: str | None) -> str:
    theirs = fabric.routing_domain_of(vm)
    where = f"routing domain {theirs}" if theirs else "no routing domain"
    return f"is in {where}, unreachable from {domain}"


def _owner_of(fabric: Fabric, mac: str) -> str:
    owner = next((vm.name for vm in fabric.vms.values() if vm.mac.lower() == mac), None)
    return f" ({owner})" if owner else ""


def _list(described: list[dict]) -> str:
    return ", ".join(o["text"] for o in described)


def _describe_output(desired: DesiredHost, port: str, tun_id: int | None,
                     tun_dst: str | None, host_of_pa: dict[str, str]) -> dict[str, Any]:
    spec = desired.ports.get(port)
    layout = desired.fabric.overlay.key_layout
    if spec is not None and spec.role == Role.TUNNEL_FLOW:
        # One port for every peer: the peer is whose PA the flow put in tun_dst.
        key = tun_id or 0
        peer = host_of_pa.get(tun_dst or "")
        out = {"kind": "tunnel", "port": port, "peer": peer, "tun_dst": tun_dst,
               "key": f"{key:#x}", "vsid": nvgre.vsid_of_key(key, layout)}
        if tun_id is not None and desired.fabric.overlay.flow_id == FlowId.HASH:
            out["flow_id"] = "hash"
        return {**out, "text": f"tunnel to {peer or 'no host of the fabric'} (tun_dst "
                               f"{tun_dst}, key {_key_words(out)}, port {port})"}
    if spec is not None and spec.role == Role.TUNNEL:
        option = spec.options.get("key", "")
        key = tun_id if tun_id is not None else int(option) if option.isdigit() else 0
        peer = spec.external_ids.get(PEER_KEY)
        vsid = int(spec.external_ids.get(VSID_KEY) or nvgre.vsid_of_key(key, layout))
        out = {"kind": "tunnel", "port": port, "peer": peer, "key": f"{key:#x}", "vsid": vsid}
        if tun_id is not None and desired.fabric.overlay.flow_id == FlowId.HASH:
            out["flow_id"] = "hash"
        return {**out, "text": f"tunnel to {peer} (key {_key_words(out)}, port {port})"}
    if spec is not None and spec.role == Role.VM:
        vm = spec.external_ids.get(VM_KEY)
        return {"kind": "vm", "port": port, "vm": vm, "text": f"{vm} (port {port})"}
    if spec is not None and spec.role == Role.EXTERNAL:
        domain = spec.external_ids.get(DOMAIN_KEY)
        return {"kind": "external", "port": port, "domain": domain,
                "text": f"{domain}'s external side (port {port})"}
    return {"kind": "other", "port": port, "text": f"port {port}"}


def _key_words(out: dict[str, Any]) -> str:
    """A tunnel output's key as the verdict says it: ``0x138900``, or with a hashed
    FlowID ``0x138900 + FlowID hash (0x76 for this packet)``: another flow of the same
    VSID gets another FlowID."""
    key = int(out["key"], 16)
    if out.get("flow_id") != "hash":
        return f"{key:#x}"
    return f"{key & ~0xFF:#x} + FlowID hash ({key & 0xFF:#x} for this packet)"
