"""What a host looked like before a run, and the changes that bring it back.  Pure.

A snapshot holds the rows the fabric owns (bridges, ports with their interface),
the addresses, routes and state of the links a run may touch, and the owned flows
of the integration bridge.  Restoring diffs the host as it is now against the
snapshot with the same diff `up` uses, so a rollback is one more convergence.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Any

from ovsnvgre.actual import ActualBridge, ActualKernel, ActualPort, ActualSwitch, LinkState
from ovsnvgre.changes import (
    AddressChange,
    FlowChanges,
    KernelChange,
    LinkDown,
    LinkUp,
    OvsdbChange,
    PortCreate,
    PortRecord,
    RouteChange,
)
from ovsnvgre.desired import OWNER_KEY, ROLE_KEY, BridgeSpec, PortSpec
from ovsnvgre.pipeline import Flow
from ovsnvgre.plan import diff_flows, diff_rows
from ovsnvgre.underlay import SAVED_KEYS, route_from_dict, route_to_dict

FORMAT = 1


@dataclass(frozen=True)
class Snapshot:
    """The owned rows, the touched links and the owned flows of one host at one moment."""

    owner: str
    host: str
    bridges: dict[str, ActualBridge]
    ports: dict[str, ActualPort]
    links: dict[str, LinkState]
    flow_bridge: str
    # The owned flows of ``flow_bridge``; empty when it did not exist.
    flows: frozenset[Flow]

    def port_names(self) -> set[str]:
        """The owned ports that are not a bridge's local port."""
        return {name for name in self.ports if name not in self.bridges}


def take(owner: str, host: str, switch: ActualSwitch, kernel: ActualKernel, flow_bridge: str,
         flows: set[Flow]) -> Snapshot:
    """What ``owner`` has on the switch, the links read, and ``flows`` of ``flow_bridge``."""
    return Snapshot(
        owner=owner, host=host,
        bridges={n: b for n, b in switch.bridges.items() if b.external_ids.get(OWNER_KEY) == owner},
        ports={n: p for n, p in switch.ports.items() if p.external_ids.get(OWNER_KEY) == owner},
        links=dict(kernel.links), flow_bridge=flow_bridge, flows=frozenset(flows))


# --- restoring -----------------------------------------------------------------------


def restore_rows(snapshot: Snapshot, actual: ActualSwitch) -> list[OvsdbChange]:
    """The OVSDB changes that make the owned rows what they were."""
    bridges = {name: BridgeSpec(name=name, datapath_type=b.datapath_type,
                                protocols=tuple(b.protocols), fail_mode=b.fail_mode,
                                external_ids=dict(b.external_ids))
               for name, b in snapshot.bridges.items()}
    ports: dict[str, PortSpec] = {}
    saved: dict[str, dict[str, str]] = {}
    for name in snapshot.port_names():
        port = snapshot.ports[name]
        if port.bridge is None:
            continue  # a row no bridge held: nothing to restore it into
        ids = {k: v for k, v in port.external_ids.items() if k not in SAVED_KEYS}
        saved[name] = {k: v for k, v in port.external_ids.items() if k in SAVED_KEYS}
        ports[name] = PortSpec(name=name, bridge=port.bridge,
                               role=port.external_ids.get(ROLE_KEY, "owned"),
                               iface_type=port.iface_type, options=dict(port.options),
                               external_ids=ids, bfd=dict(port.bfd),
                               mtu_request=port.mtu_request, mac=port.mac)
    changes, _ = diff_rows(snapshot.owner, bridges, ports, actual)
    # A re-created port carries again its records (what the uplink held, what the tep
    # port holds); one that stayed gets them back as they were.
    changes = [replace(c, extra_ids=saved[c.spec.name])
               if isinstance(c, PortCreate) and saved.get(c.spec.name) else c for c in changes]
    created = {c.spec.name for c in changes if isinstance(c, PortCreate)}
    for name, records in sorted(saved.items()):
        now = actual.ports.get(name)
        if records and name not in created and now is not None and \
                any(now.external_ids.get(k) != v for k, v in records.items()):
            changes.append(PortRecord(name, records))
    return changes


def restore_kernel(snapshot: Snapshot, kernel: ActualKernel) -> list[KernelChange]:
    """Addresses, routes and link states back as they were, on links that exist now.

    In the order that works: routes and addresses leave first, then links come
    up, addresses arrive, and routes (whose gateways need the addresses) last.
    """
    leave_routes: list[KernelChange] = []
    leave_addresses: list[KernelChange] = []
    links: list[KernelChange] = []
    arrive_addresses: list[KernelChange] = []
    arrive_routes: list[KernelChange] = []
    for name, was in sorted(snapshot.links.items()):
        now = kernel.links.get(name)
        if now is None:
            continue
        leave_routes += [RouteChange("delete", name, r)
                         for r in sorted(now.routes - was.routes, key=str)]
        leave_addresses += [AddressChange("delete", name, a)
                            for a in sorted(now.addresses - was.addresses, key=str)]
        if now.up != was.up:
            links.append(LinkUp(name) if was.up else LinkDown(name))
        arrive_addresses += [AddressChange("add", name, a)
                             for a in sorted(was.addresses - now.addresses, key=str)]
        arrive_routes += [RouteChange("add", name, r)
                          for r in sorted(was.routes - now.routes, key=str)]
    return [*leave_routes, *leave_addresses, *links, *arrive_addresses, *arrive_routes]


def restore_flows(snapshot: Snapshot, installed: set[Flow], gone: frozenset[str] = frozenset()
                  ) -> FlowChanges:
    """The flow-mods that make the owned flows what they were, but for those that name a
    port in ``gone`` (ovs-ofctl refuses a flow naming a port that has no OpenFlow
    number: a device the run deleted, such as a routing domain's veth)."""
    wanted = {flow for flow in snapshot.flows if not names_port(flow, gone)} if gone \
        else set(snapshot.flows)
    return diff_flows(snapshot.flow_bridge, wanted, installed)


def names_port(flow: Flow, ports: frozenset[str]) -> bool:
    """Whether ``flow`` matches on (``in_port``) or outputs to one of ``ports``."""
    return any(token.startswith("in_port=") and token[8:] in ports for token in flow.match) \
        or any(action.startswith("output:") and action[7:] in ports
               for action in flow.actions.split(","))


# --- as JSON (the rollback file) ------------------------------------------------------


def to_dict(snapshot: Snapshot) -> dict[str, Any]:
    """The snapshot as JSON-ready data (the rollback file's ``snapshot``)."""
    return {
        "owner": snapshot.owner, "host": snapshot.host,
        "bridges": [{"name": b.name, "datapath_type": b.datapath_type,
                     "protocols": list(b.protocols), "fail_mode": b.fail_mode,
                     "external_ids": b.external_ids, "ports": list(b.ports)}
                    for b in snapshot.bridges.values()],
        "ports": [{"name": p.name, "bridge": p.bridge, "type": p.iface_type,
                   "options": p.options, "external_ids": p.external_ids,
                   "iface_external_ids": p.iface_external_ids, "bfd": p.bfd,
                   "mtu_request": p.mtu_request, "mac": p.mac}
                  for p in snapshot.ports.values()],
        "links": [{"name": link.name, "up": link.up,
                   "addresses": sorted(str(a) for a in link.addresses),
                   "routes": [route_to_dict(r) for r in sorted(link.routes, key=str)]}
                  for link in snapshot.links.values()],
        "flow_bridge": snapshot.flow_bridge,
        "flows": sorted([f.table, f.priority, sorted(f.match), f.actions]
                        for f in snapshot.flows),
    }


def from_dict(data: dict[str, Any]) -> Snapshot:
    """The inverse of to_dict; raises KeyError, TypeError or ValueError on a damaged record."""
    bridges = {b["name"]: ActualBridge(
        name=b["name"], datapath_type=b["datapath_type"], protocols=tuple(b["protocols"]),
        fail_mode=b["fail_mode"], external_ids=dict(b["external_ids"]),
        ports=tuple(b["ports"])) for b in data["bridges"]}
    ports = {p["name"]: ActualPort(
        name=p["name"], bridge=p["bridge"], iface_type=p["type"], options=dict(p["options"]),
        external_ids=dict(p["external_ids"]), iface_external_ids=dict(p["iface_external_ids"]),
        bfd=dict(p.get("bfd", {})), mtu_request=p.get("mtu_request"),
        mac=p.get("mac"))
        for p in data["ports"]}
    links = {link["name"]: LinkState(
        name=link["name"], up=bool(link["up"]),
        addresses=frozenset(ipaddress.ip_interface(a) for a in link["addresses"]),
        routes=frozenset(route_from_dict(r) for r in link["routes"]))
        for link in data["links"]}
    flows = frozenset(Flow(int(t), int(p), frozenset(m), str(a))
                      for t, p, m, a in data["flows"])
    return Snapshot(owner=data["owner"], host=data["host"], bridges=bridges, ports=ports,
                    links=links, flow_bridge=data["flow_bridge"], flows=flows)
