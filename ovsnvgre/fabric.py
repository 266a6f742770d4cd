"""Load and validate a fabric file into the frozen dataclasses of model.py.

Every refusal is a FabricError whose message names the file, the line where
the YAML gives one, the entry (``vms.red-a.mac``) and what is wrong.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from ovsnvgre import desired, fabric_cache, fabric_external, fabric_routing, fabric_yaml, nvgre
from ovsnvgre.errors import FabricError
from ovsnvgre.fabric_checks import Checker, describe, ipv4_interface, join
from ovsnvgre.fabric_yaml import LineList, LineMap
from ovsnvgre.model import (
    DatapathType,
    Fabric,
    FlowId,
    Host,
    KeyLayout,
    Overlay,
    RoutingDomain,
    TunnelPorts,
    Underlay,
    VirtualSubnet,
    Vm,
)

# What the kernel accepts in an interface name, minus characters that would
# make the ovs-vsctl and ip command lines a user copies from us ambiguous.
PORT_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


def _parse_pa(text: str) -> ipaddress.IPv4Interface:
    if "/" not in text:
        raise ValueError(text)
    return ipv4_interface(text) or ipaddress.IPv4Interface(text)


def _parse_ca(text: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    if "/" not in text:
        raise ValueError(text)
    return ipv4_interface(text) or ipaddress.ip_interface(text)


# --- the loader ---------------------------------------------------------------------


def load(path: str | Path) -> Fabric:
    """Read, parse and validate the fabric file at ``path``."""
    source = str(path)
    try:
        if Path(path).exists() and not Path(path).is_file() and not Path(path).is_dir():
            raise FabricError(f"{source}: is not a regular file (a device or a pipe), not a "
                              "fabric file")
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise FabricError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise FabricError(f"{source}: is a directory, not a fabric file") from None
    except OSError as exc:
        raise FabricError(f"{source}: cannot read: {exc.strerror}") from None
    with fabric_yaml.gc_paused():  # as in loads: reading a cached fabric back, 2x faster
        cached = fabric_cache.get(data)
        if isinstance(cached, Fabric):
            return replace(cached, source=source)
        fabric = loads(data, source)
        fabric_cache.put(data, fabric)
    return fabric


def loads(data: bytes | str, source: str = "<fabric>") -> Fabric:
    """Parse and validate fabric text; ``source`` names it in error messages."""
    # The garbage collector's passes over the millions of objects of a large fabric
    # cost more than making them, and none is in a cycle: paused.  The document is
    # freed (by reference counting) before it resumes, so its one pass then sees
    # only the Fabric.
    with fabric_yaml.gc_paused():
        return _loads(data, source)


def _loads(data: bytes | str, source: str) -> Fabric:
    check = Checker(source)
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise check.fail("", f"byte 0x{data[exc.start]:02x} is not valid UTF-8 "
                             "(the fabric file must be UTF-8 text)", line) from None
    else:
        text = data
    try:
        document = fabric_yaml.parse(text)
    except fabric_yaml.DocumentError as exc:
        raise check.fail("", exc.message, exc.line) from None
    if document is None:
        raise check.fail("", "the file is empty; a fabric needs at least `fabric` and `hosts`")
    if not isinstance(document, LineMap):
        raise check.fail("", f"the document must be a mapping, not {describe(document)}", 1)
    return _build(document, check)


def _build(doc: LineMap, check: Checker) -> Fabric:
    check.keys(doc, "", {"fabric", "datapath_type", "underlay", "overlay", "hosts",
                         "virtual_subnets", "vms", "routing_domains"}, {"fabric", "hosts"})
    name = check.string(doc, "fabric", "")
    assert name is not None  # noqa: S101 - an invariant the code above guarantees, not input checking
    datapath_type = check.choice(doc, "datapath_type", "", DatapathType, DatapathType.SYSTEM)
    underlay = _underlay(doc, check)
    overlay = _overlay(doc, check)
    if underlay.bridge == overlay.bridge:
        raise check.fail("overlay.bridge", f"{overlay.bridge!r} is also the underlay bridge",
                         _line_of(doc, "overlay"))
    reserved = {underlay.bridge: "underlay.bridge", underlay.tep_port: "underlay.tep_port",
                overlay.bridge: "overlay.bridge"}
    if len(reserved) < 3:
        raise check.fail("underlay.tep_port", f"{underlay.tep_port!r} is also a bridge name",
                         _line_of(doc, "underlay"))
    if overlay.tunnel_ports == TunnelPorts.FLOW:
        if nvgre.FLOW_PORT in reserved:
            where = reserved[nvgre.FLOW_PORT]
            raise check.fail(where, f"{nvgre.FLOW_PORT!r} is the name of the GRE port of "
                             "tunnel_ports: flow", _line_of(doc, where.split(".")[0]))
        reserved[nvgre.FLOW_PORT] = "the GRE port of tunnel_ports: flow"
    hosts = _hosts(doc, check, reserved)
    seen = fabric_external.Seen()
    domains = fabric_routing.routing_domains(
        _section(doc, "routing_domains", check, allow_missing=True), check, hosts, reserved,
        PORT_NAME_RE, seen)
    subnets = _subnets(doc, check, domains)
    vms = _vms(doc, check, hosts, subnets, reserved, overlay.router_mac)
    fabric_external.floating_vms(domains, subnets, vms, seen, check)
    return Fabric(name=name, datapath_type=datapath_type, underlay=underlay, overlay=overlay,
                  hosts=hosts, virtual_subnets=subnets, vms=vms, routing_domains=domains,
                  source=check.source)


def _line_of(mapping: LineMap, key: str) -> int | None:
    return mapping.key_lines.get(key)


def _section(doc: LineMap, key: str, check: Checker, allow_missing: bool) -> LineMap:
    if key not in doc:
        if allow_missing:
            return LineMap.empty()
        raise check.fail(key, "is required", doc.line)
    value = doc[key]
    if value is None and allow_missing:
        return LineMap.empty(doc.key_lines[key])
    return check.mapping(value, key, doc.key_lines[key], doc.texts.get(key))


def _underlay(doc: LineMap, check: Checker) -> Underlay:
    section = _section(doc, "underlay", check, allow_missing=True)
    check.keys(section, "underlay", {"bridge", "tep_port", "probe", "mtu"}, set())
    default = Underlay()
    return Underlay(
        probe=_probes(section, check),
        mtu=check.integer(section, "mtu", "underlay", nvgre.MIN_UNDERLAY_MTU, nvgre.MAX_MTU,
                          default.mtu) or default.mtu,
        bridge=check.string(section, "bridge", "underlay", default.bridge, PORT_NAME_RE,
                            nvgre.MAX_PORT_NAME),
        tep_port=check.string(section, "tep_port", "underlay", default.tep_port, PORT_NAME_RE,
                              nvgre.MAX_PORT_NAME),
    )


def _probes(section: LineMap, check: Checker) -> tuple[ipaddress.IPv4Address, ...]:
    if "probe" not in section:
        return ()
    value = section["probe"]
    line = section.key_lines["probe"]
    if isinstance(value, LineList):
        items = [(f"underlay.probe[{index}]", text or item)
                 for index, (item, text) in enumerate(zip(value, value.texts, strict=True))]
    else:
        items = [("underlay.probe", section.texts.get("probe") or value)]
    probes = []
    for where, item in items:
        address = check.parse(item, where, line, ipaddress.IPv4Address, "an IPv4 address")
        if address.is_unspecified or address.is_multicast or address.is_loopback:
            raise check.fail(where, f"{address} cannot answer a probe", line)
        probes.append(address)
    return tuple(probes)


def _overlay(doc: LineMap, check: Checker) -> Overlay:
    section = _section(doc, "overlay", check, allow_missing=True)
    check.keys(section, "overlay", {"bridge", "key_layout", "tunnel_ports", "bfd", "vm_mtu",
                                    "flow_id", "router_mac"}, set())
    default = Overlay()
    overlay = Overlay(
        router_mac=_router_mac(section, check, default.router_mac),
        bfd=check.boolean(section, "bfd", "overlay", default.bfd),
        vm_mtu=check.integer(section, "vm_mtu", "overlay", nvgre.MIN_VM_MTU,
                             nvgre.MAX_MTU - nvgre.OVERHEAD, None),
        bridge=check.string(section, "bridge", "overlay", default.bridge, PORT_NAME_RE,
                            nvgre.MAX_PORT_NAME),
        key_layout=check.choice(section, "key_layout", "overlay", KeyLayout,
                                default.key_layout),
        tunnel_ports=check.choice(section, "tunnel_ports", "overlay", TunnelPorts,
                                  default.tunnel_ports),
        flow_id=check.choice(section, "flow_id", "overlay", FlowId, default.flow_id),
    )
    if overlay.bfd and overlay.tunnel_ports == TunnelPorts.FLOW:
        # BFD runs on an Interface towards one remote_ip (ovs-vswitchd.conf.db(5), BFD);
        # the flow port has remote_ip=flow, so no session could tell one peer from another.
        raise check.fail("overlay.bfd", "BFD needs a GRE port per peer, and tunnel_ports: "
                         "flow has one port for every peer; use tunnel_ports: per-peer or "
                         "per-vsid for BFD, or bfd: false", section.key_lines["bfd"])
    _check_flow_id(overlay, section, check)
    return overlay


def _check_flow_id(overlay: Overlay, section: LineMap, check: Checker) -> None:
    """A hashed FlowID needs the RFC 7637 key and ports that take the key from the flow."""
    if overlay.flow_id != FlowId.HASH:
        return
    line = section.key_lines.get("flow_id")
    if overlay.key_layout == KeyLayout.PLAIN:
        raise check.fail("overlay.flow_id", "hash needs key_layout: rfc7637 (with plain the "
                         "whole key is the VSID: there is no FlowID)", line)
    if overlay.tunnel_ports == TunnelPorts.PER_VSID:
        # Every other mode has ports with key=flow: the pipeline writes the key.
        others = ", ".join(mode.value for mode in TunnelPorts if mode != TunnelPorts.PER_VSID)
        raise check.fail("overlay.flow_id", "hash needs tunnel ports that take the key from "
                         f"the flow (tunnel_ports: {others}), but tunnel_ports is per-vsid: "
                         "its ports send one fixed key each, FlowID 0", line)


def _router_mac(section: LineMap, check: Checker, default: str) -> str:
    """``overlay.router_mac``: a locally administered unicast MAC (IEEE 802: the first
    octet's lowest bit clear, the next one set), so it never clashes with a NIC's."""
    if "router_mac" not in section:
        return default
    mac = check.parsed(section, "router_mac", "overlay", _parse_mac,
                       "a MAC address (six hex pairs like 02:00:5e:00:01:01)")
    if int(mac[:2], 16) & 0b11 != 0b10:
        raise check.fail("overlay.router_mac", f"{mac} is not a locally administered unicast "
                         "MAC (like 02:00:5e:00:01:01)", section.key_lines["router_mac"])
    return mac


def _hosts(doc: LineMap, check: Checker, reserved: dict[str, str]) -> dict[str, Host]:
    section = _section(doc, "hosts", check, allow_missing=False)
    if not section:
        raise check.fail("hosts", "lists no host", section.line or _line_of(doc, "hosts"))
    hosts: dict[str, Host] = {}
    pa_owner: dict[ipaddress.IPv4Address, str] = {}
    for host_name, path, entry in check.entries(section, "hosts", {"pa", "uplink", "gateway"},
                                                {"pa"}):
        pa = check.parsed(entry, "pa", path, _parse_pa,
                          "an IPv4 address with a prefix length (like 192.168.1.11/24)")
        if pa.ip in (pa.network.network_address, pa.network.broadcast_address) \
                and pa.network.prefixlen < 31:
            raise check.fail(join(path, "pa"), f"{pa} is the network or broadcast address "
                             "of its subnet", entry.key_lines["pa"])
        if pa.ip in pa_owner:
            raise check.fail(join(path, "pa"), f"{pa.ip} is already the PA of host "
                             f"{pa_owner[pa.ip]!r}", entry.key_lines["pa"])
        pa_owner[pa.ip] = host_name
        uplink = check.string(entry, "uplink", path, None, PORT_NAME_RE, nvgre.MAX_PORT_NAME)
        if uplink in reserved:
            raise check.fail(join(path, "uplink"), f"{uplink!r} is already "
                             f"{reserved[uplink]}", entry.key_lines["uplink"])
        gateway = None
        if "gateway" in entry:
            gateway = check.parsed(entry, "gateway", path, ipaddress.IPv4Address,
                                   "an IPv4 address")
            if gateway not in pa.network:
                raise check.fail(join(path, "gateway"), f"{gateway} is outside the host's "
                                 f"PA subnet {pa.network}", entry.key_lines["gateway"])
            if gateway == pa.ip:
                raise check.fail(join(path, "gateway"), f"{gateway} is the host's own PA",
                                 entry.key_lines["gateway"])
        hosts[host_name] = Host(name=host_name, pa=pa, uplink=uplink, gateway=gateway)
    return hosts


def _subnets(doc: LineMap, check: Checker, domains: dict[str, RoutingDomain]
             ) -> dict[str, VirtualSubnet]:
    section = _section(doc, "virtual_subnets", check, allow_missing=True)
    subnets: dict[str, VirtualSubnet] = {}
    vsid_owner: dict[int, str] = {}
    prefix_lines: dict[str, int] = {}
    for subnet_name, path, entry in check.entries(section, "virtual_subnets",
                                                  {"vsid", *fabric_routing.SUBNET_KEYS},
                                                  {"vsid"}):
        vsid = check.whole(entry, "vsid", path)
        vsid_line = entry.key_lines["vsid"]
        if not nvgre.is_valid_vsid(vsid):
            raise check.fail(join(path, "vsid"), f"{vsid} is outside {nvgre.VSID_MIN}-"
                             f"{nvgre.VSID_MAX} (RFC 7637 reserves 0-4095 and 16777215)",
                             vsid_line)
        if vsid in vsid_owner:
            raise check.fail(join(path, "vsid"), f"VSID {vsid} is already used by subnet "
                             f"{vsid_owner[vsid]!r}", vsid_line)
        vsid_owner[vsid] = subnet_name
        prefix = fabric_routing.prefix(entry, path, check)
        domain = fabric_routing.routing_domain(entry, path, check, domains, prefix)
        prefix_lines[subnet_name] = entry.key_lines.get("prefix", entry.line)
        subnets[subnet_name] = VirtualSubnet(name=subnet_name, vsid=vsid, prefix=prefix,
                                             routing_domain=domain)
    fabric_routing.no_overlap(subnets, prefix_lines, check)
    return subnets


def _parse_mac(text: str) -> str:
    if not MAC_RE.match(text):
        raise ValueError(text)
    return text.lower()


def _vms(doc: LineMap, check: Checker, hosts: dict[str, Host],  # noqa: C901 - one decision per branch, each documented; splitting would scatter it
         subnets: dict[str, VirtualSubnet], reserved: dict[str, str], router_mac: str
         ) -> dict[str, Vm]:
    section = _section(doc, "vms", check, allow_missing=True)
    vms: dict[str, Vm] = {}
    seen_ca: dict[tuple[str, Any], str] = {}
    seen_mac: dict[tuple[str, str], str] = {}
    seen_port: dict[tuple[str, str], str] = {}
    vm_keys = {"host", "subnet", "port", "mac", "ca"}
    for vm_name, path, entry in check.entries(section, "vms", vm_keys, vm_keys):
        host = check.string(entry, "host", path)
        if host not in hosts:
            raise check.fail(join(path, "host"), f"unknown host {host!r} (hosts: "
                             f"{', '.join(hosts)})", entry.key_lines["host"])
        subnet = check.string(entry, "subnet", path)
        if subnet not in subnets:
            known = ", ".join(subnets) or "none defined"
            raise check.fail(join(path, "subnet"), f"unknown virtual subnet {subnet!r} "
                             f"(virtual_subnets: {known})", entry.key_lines["subnet"])
        port = check.string(entry, "port", path, None, PORT_NAME_RE, nvgre.MAX_PORT_NAME)
        assert host is not None and subnet is not None and port is not None  # noqa: S101 - an invariant the code above guarantees, not input checking
        port_line = entry.key_lines["port"]
        if port in reserved:
            raise check.fail(join(path, "port"), f"{port!r} is already {reserved[port]}",
                             port_line)
        if port == hosts[host].uplink:
            raise check.fail(join(path, "port"), f"{port!r} is the uplink of host {host!r}",
                             port_line)
        if (host, port) in seen_port:
            raise check.fail(join(path, "port"), f"port {port!r} on host {host!r} is already "
                             f"used by VM {seen_port[host, port]!r}", port_line)
        seen_port[host, port] = vm_name
        mac = check.parsed(entry, "mac", path, _parse_mac,
                           "a MAC address (six hex pairs like 02:00:00:00:50:01)")
        mac_line = entry.key_lines["mac"]
        if int(mac[:2], 16) & 1:
            raise check.fail(join(path, "mac"), f"{mac} is a multicast MAC; a VM needs a "
                             "unicast one", mac_line)
        if mac == "00:00:00:00:00:00":
            raise check.fail(join(path, "mac"), "the all-zero MAC is not a valid VM MAC",
                             mac_line)
        if (subnet, mac) in seen_mac:
            raise check.fail(join(path, "mac"), f"{mac} is already used by VM "
                             f"{seen_mac[subnet, mac]!r} in virtual subnet {subnet!r}",
                             mac_line)
        if mac == router_mac and subnets[subnet].routing_domain is not None:
            raise check.fail(join(path, "mac"), f"{mac} is the distributed router's MAC "
                             "(overlay.router_mac) in a routed subnet", mac_line)
        seen_mac[subnet, mac] = vm_name
        ca = check.parsed(entry, "ca", path, _parse_ca,
                          "an address with a prefix length (like 10.0.0.1/24)")
        # The address's bytes (4 for IPv4, 16 for IPv6: the families never meet), not
        # ca.ip, a new object with a slow hash for every VM.
        ca_key = (subnet, ca.packed)
        if ca_key in seen_ca:
            raise check.fail(join(path, "ca"), f"{ca.ip} is already used by VM "
                             f"{seen_ca[ca_key]!r} in virtual subnet {subnet!r}",
                             entry.key_lines["ca"])
        fabric_routing.ca_in_prefix(check, join(path, "ca"), entry.key_lines["ca"], ca,
                                    subnets[subnet])
        seen_ca[ca_key] = vm_name
        vms[vm_name] = Vm(name=vm_name, host=host, virtual_subnet=subnet, port=port, mac=mac,
                          ca=ca)
    return vms


def warnings(fabric: Fabric) -> list[str]:
    """What is legal in a fabric file but will not work as the user expects (one line each)."""
    vm_mtu, underlay_mtu = fabric.overlay.vm_mtu, fabric.underlay.mtu
    found = desired.too_many_ports(fabric) + desired.flood_limits(fabric)
    if vm_mtu is not None and vm_mtu > nvgre.max_vm_mtu(underlay_mtu):
        found.insert(0, f"overlay.vm_mtu {vm_mtu} is more than underlay.mtu {underlay_mtu} - "
                     f"{nvgre.OVERHEAD} = {nvgre.max_vm_mtu(underlay_mtu)}: frames that "
                     "large will not cross the tunnels")
    return found
