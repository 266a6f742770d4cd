"""Preflight: what makes `up` refuse before its first change, and what it only warns of.

Pure: it reads the survey (the switch's rows, the kernel's links).  A blocker is a
shape of the host that `up` cannot take over without losing something: a missing
uplink, an uplink enslaved to something that is not the fabric's underlay bridge, a
PA already on another link, a leased (DHCP/SLAAC) address that `up` would silently
make static, a NIC the kernel datapath cannot take.  `plan` lists them; `up` refuses
with the first, exit 1, nothing changed, no rollback file.
"""

from __future__ import annotations

from ovsnvgre.actual import ActualKernel, ActualSwitch, LinkState
from ovsnvgre.desired import MAX_AUTO_OFPORTS, OWNER_KEY, ROLE_KEY, DesiredHost, Role
from ovsnvgre.model import DatapathType
from ovsnvgre.underlay import SAVED_ADDRESSES_KEY

PROTO_DHCP = 16  # rtnetlink's protocol of routes a DHCP client made
# Stacked links whose parent the kernel datapath refuses to take (EBUSY).
KERNEL_DATAPATH_REFUSES = ("macvlan", "macvtap", "ipvlan", "ipvtap")


def preflight(desired: DesiredHost, switch: ActualSwitch, kernel: ActualKernel
              ) -> tuple[list[str], list[str]]:
    """(blockers, warnings) of taking this host over, one line each."""
    blockers: list[str] = []
    warnings: list[str] = []
    where = f"hosts.{desired.host.name}.uplink"
    uplink_name = desired.uplink
    if uplink_name:
        link = kernel.get(uplink_name)
        if link is None:
            blockers.append(f"the uplink {uplink_name} ({where}) does not exist on this "
                            "machine: name the NIC that carries the PA")
        elif link.loopback:
            blockers.append(f"the uplink {uplink_name} ({where}) is the loopback device: name "
                            "the NIC that carries the PA")
        else:
            blockers += _foreign_master(desired, switch, link)
            found_blockers, found_warnings = _uppers(desired, link)
            blockers += found_blockers
            warnings += found_warnings
            if not _already_taken(desired, switch):
                blockers += _leased(link)
    blockers += _pa_elsewhere(desired, kernel)
    blockers += _too_many_ports(desired, switch)
    return blockers, warnings


def _too_many_ports(desired: DesiredHost, switch: ActualSwitch) -> list[str]:
    """A bridge that would hold more ports than ovs-vswitchd numbers (``MAX_AUTO_OFPORTS``):
    `up` would fail half-way, the ports past the limit refused."""
    blockers = []
    for bridge in desired.bridges:
        wanted = {name for name, port in desired.ports.items() if port.bridge == bridge}
        # Another fabric's or tool's ports stay; this fabric's that it no longer wants go.
        foreign = {name for name in switch.bridges[bridge].ports
                   if name not in desired.ports and name != bridge
                   and (name not in switch.ports
                        or switch.ports[name].external_ids.get(OWNER_KEY) != desired.owner)} \
            if bridge in switch.bridges else set()
        if len(wanted) + len(foreign) > MAX_AUTO_OFPORTS:
            blockers.append(
                f"bridge {bridge} would hold {len(wanted) + len(foreign):,} ports "
                f"({len(wanted):,} of this fabric), and Open vSwitch numbers at most "
                f"{MAX_AUTO_OFPORTS:,} on a bridge: use overlay.tunnel_ports per-peer or "
                "flow (one port per peer, or one in all)")
    return blockers


def _already_taken(desired: DesiredHost, switch: ActualSwitch) -> bool:
    """Whether the uplink is this fabric's port already (its saved record rules then)."""
    port = switch.ports.get(desired.uplink or "")
    return port is not None and port.external_ids.get(OWNER_KEY) == desired.owner \
        and SAVED_ADDRESSES_KEY in port.external_ids


def _foreign_master(desired: DesiredHost, switch: ActualSwitch, link: LinkState) -> list[str]:
    name = link.name
    port_name = switch.port_of_interface.get(name)
    if port_name is not None:
        port = switch.ports[port_name]
        ours = (port.external_ids.get(OWNER_KEY) == desired.owner
                and port.external_ids.get(ROLE_KEY) == Role.UPLINK and port_name == name)
        if not ours:
            kind = "bond port" if port.interfaces > 1 else "port"
            bridge = f" of OVS bridge {port.bridge}" if port.bridge else ""
            return [f"the uplink {name} is in {kind} {port_name}{bridge}, which ovsnvgre did "
                    f"not create: take it out of there first, or name another uplink"]
        return []
    if link.master is not None and link.master_kind != "openvswitch":
        kind = link.master_kind or "device"
        return [f"the uplink {name} is enslaved to {kind} {link.master}: ovsnvgre takes over "
                "a NIC only from no master (release it first, or name another uplink)"]
    return []


def _uppers(desired: DesiredHost, link: LinkState) -> tuple[list[str], list[str]]:
    if not link.uppers:
        return [], []
    shown = ", ".join(f"{kind} {name}" for name, kind in sorted(link.uppers.items()))
    refused = [name for name, kind in link.uppers.items() if kind in KERNEL_DATAPATH_REFUSES]
    if refused and desired.fabric.datapath_type == DatapathType.SYSTEM:
        return [f"the uplink {link.name} is the parent of {shown}: the kernel datapath "
                "cannot take a NIC that a macvlan or ipvlan sits on (EBUSY); move them, or "
                "name another uplink"], []
    return [], [f"the uplink {link.name} is the parent of {shown}: they stay on the NIC "
                "and are not moved with its addresses"]


def _leased(link: LinkState) -> list[str]:
    found = [f"the uplink {link.name}'s address {address} is leased (DHCP or SLAAC): `up` "
             "would make it static on the tep port while its client renews it on the NIC. "
             "A PA is static: make the address static in the host's network configuration "
             "(or have the network manager configure it on the tep port), then run `up`"
             for address in sorted(link.leased, key=str)]
    found += [f"the uplink {link.name}'s route {route} comes from a DHCP client: make the "
              "host's underlay static first (the route would be moved and made static)"
              for route in sorted(link.dynamic_routes, key=str) if route.proto == PROTO_DHCP]
    return found


def _pa_elsewhere(desired: DesiredHost, kernel: ActualKernel) -> list[str]:
    allowed = {desired.uplink, desired.tep_port}
    return [f"the PA {desired.pa.ip} is already configured on {link}, which is neither the "
            f"uplink nor the tep port: remove it there first"
            for address, link in sorted(kernel.everywhere.items(), key=lambda i: str(i[0]))
            if address.ip == desired.pa.ip and link not in allowed]
