"""What `ovsnvgre status` reports: the host, its tunnels and VMs, flows, MTU and drift.

Pure: survey.status gathers the facts (rows, interface details, links, flows, the
plan) and this module turns them into one report, as text lines or as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ovsnvgre import fabric as fabrics
from ovsnvgre import nvgre, pipeline
from ovsnvgre.actual import ActualKernel
from ovsnvgre.changes import FlowChanges, Plan, PortDelete
from ovsnvgre.desired import PEER_KEY, VSID_KEY, DesiredHost, Role
from ovsnvgre.model import Fabric, FlowId, KeyLayout
from ovsnvgre.pipeline import Flow
from ovsnvgre.plan import stale_text

Details = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Report:
    """`ovsnvgre status`: the host, tunnels, VMs, flows per table, warnings and drift."""

    host: dict[str, Any]
    tunnels: list[dict[str, Any]]
    vms: list[dict[str, Any]]
    flows: dict[str, int]
    warnings: list[str]
    drift: list[str]
    notes: list[str] = field(default_factory=list)
    # The routing domains whose distributed router runs on this host (routing_domains()).
    routing_domains: list[dict[str, Any]] = field(default_factory=list)
    # The routing domains' external sides when this host is their gateway (issue 19).
    external: list[dict[str, Any]] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        """Whether the host matches the fabric (no drift)."""
        return not self.drift

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (`status --json`)."""
        return {"host": self.host, "tunnels": self.tunnels, "vms": self.vms,
                "flows": self.flows, "warnings": self.warnings, "drift": self.drift,
                "converged": self.converged, "notes": self.notes,
                "routing_domains": self.routing_domains, "external": self.external}

    def lines(self) -> list[str]:
        """The report as text, one line each."""
        h = self.host
        lines = [f"host {h['name']}: PA {h['pa']} on {h['pa_on'] or 'no link (not up?)'}"
                 f" (underlay bridge {h['bridge']}, uplink {h['uplink'] or 'none'}, "
                 f"underlay MTU {h['underlay_mtu'] or 'unknown'})"
                 + (f", gateway {h['gateway']}" if h["gateway"] else "")]
        lines.append(f"tunnels ({len(self.tunnels)}):")
        lines += _table(["PEER", "PA", "VSID", "KEY", "PORT", "OFPORT", "STATE", "BFD"], [
            [t["peer"] or "-", t["remote_ip"], t["vsid"] or "all", _key_column(t), t["port"],
             t["ofport"] or "-", t["state"], _bfd_text(t["bfd"])] for t in self.tunnels])
        lines.append(f"vms ({len(self.vms)}):")
        lines += _table(["VM", "PORT", "VSID", "MAC", "CA", "LINK", "MTU", "RX", "TX"], [
            [v["name"], v["port"], v["vsid"], v["mac"], v["ca"], v["state"], v["mtu"] or "-",
             v["rx_packets"], v["tx_packets"]] for v in self.vms])
        if self.routing_domains:
            lines.append(f"routing domains ({len(self.routing_domains)}):")
            lines += _table(["DOMAIN", "SUBNET", "VSID", "PREFIX", "GATEWAY", "LOCAL VMS"], [
                [d["name"], s["name"], s["vsid"], s["prefix"], s["gateway"],
                 ", ".join(s["vms"]) or "-"]
                for d in self.routing_domains for s in d["subnets"]])
        if self.external:
            lines.append(f"external sides ({len(self.external)}):")
            lines += _table(["DOMAIN", "NIC", "SNAT", "FLOATING IPS", "NEXT HOP", "NAMESPACE",
                             "STATE", "TRANSLATIONS"], [
                [e["domain"], e["nic"], e["address"],
                 ", ".join(f"{vm} {ip}" for vm, ip in e["floating_ips"].items()) or "-",
                 e["gateway"], e["namespace"], e["state"],
                 "-" if e["translations"] is None else e["translations"]]
                for e in self.external])
        counts = ", ".join(f"{table} {count}" for table, count in self.flows.items())
        lines.append(f"flows on {h['integration_bridge']}: {counts or 'none'}")
        lines += [f"warning: {w}" for w in self.warnings]
        lines += [f"note: {n}" for n in self.notes]
        if self.converged:
            lines.append(f"host {h['name']}: converged: the switch matches the fabric")
        else:
            lines.append(f"host {h['name']}: drifted: {len(self.drift)} difference(s) from "
                         "the fabric (`ovsnvgre up` repairs them)")
            lines += [f"  {d}" for d in self.drift]
        return lines


def routing_domains(fabric: Fabric, host: str | None = None) -> list[dict[str, Any]]:
    """The fabric's routing domains as data (`validate --json`, `status --json`): each
    one's name, router MAC, subnets (name, VSID, prefix, gateway, and the VMs of
    ``host`` in it) and external gateway (host, NIC, SNAT address, next hop, floating
    IPs; None without); with ``host``, only the domains with a VM there (whose
    distributed router runs on it)."""
    domains = []
    for name in fabric.routing_domains:
        if host is not None and name not in fabric.domains_on(host):
            continue
        subnets = [{"name": s.name, "vsid": s.vsid, "prefix": str(s.prefix),
                    "gateway": str(s.gateway),
                    "vms": [vm.name for vm in fabric.vms_in(s.vsid)
                            if host is None or vm.host == host]}
                   for s in fabric.subnets_in(name)]
        gateway = fabric.routing_domains[name].external
        domains.append({"name": name, "router_mac": fabric.overlay.router_mac,
                        "subnets": subnets, "external": None if gateway is None else {
                            "host": gateway.host, "nic": gateway.nic,
                            "address": str(gateway.address), "gateway": str(gateway.gateway),
                            "floating_ips": {vm: str(ip) for vm, ip
                                             in gateway.floating_ips.items()}}})
    return domains


def _bfd_text(bfd: dict[str, Any] | None) -> str:
    if bfd is None:
        return "off"
    return f"{bfd['state']} (flaps {bfd['flaps']})"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    if not rows:
        return ["  (none)"]
    cells = [header, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in cells]


def build_report(desired: DesiredHost, details: Details, kernel: ActualKernel,
                 installed: set[Flow], plan: Plan, refused: dict[str, str]) -> Report:
    """The report from what survey.status read: interface ``details`` (ofport, error,
    link_state, mtu, statistics, bfd_status by name), the links and the stale VM
    ports, the owned flows, the plan (its lines are the drift) and the ports
    ovs-vswitchd refused."""
    fabric = desired.fabric
    pa_on = next((name for name, link in sorted(kernel.links.items())
                  if desired.pa in link.addresses), None)
    underlay = kernel.get(desired.uplink) or kernel.get(desired.tep_port)
    underlay_mtu = underlay.mtu if underlay and underlay.mtu else None
    host = {"name": desired.host.name, "pa": str(desired.pa), "pa_on": pa_on,
            "bridge": fabric.underlay.bridge, "integration_bridge": fabric.overlay.bridge,
            "tep_port": desired.tep_port, "uplink": desired.uplink,
            "gateway": str(desired.host.gateway) if desired.host.gateway else None,
            "underlay_mtu": underlay_mtu}

    tunnels = []
    for name, spec in sorted(desired.ports.items()):
        if spec.role == Role.TUNNEL_FLOW:
            tunnels += _flow_port_rows(desired, name, details, installed, plan.flows)
            continue
        if spec.role not in (Role.TUNNEL, Role.TUNNEL_RECEIVE):
            continue
        info = details.get(name, {})
        bfd_status = info.get("bfd_status") or {}
        vsid = spec.external_ids.get(VSID_KEY)
        tunnels.append({
            "port": name, "peer": spec.external_ids.get(PEER_KEY),
            "remote_ip": spec.options.get("remote_ip"),
            "vsid": int(vsid) if vsid else None,
            "key": (_key_text(spec.options.get("key", ""))
                    if spec.role == Role.TUNNEL else "flow (receive only)"),
            "flow_id": fabric.overlay.flow_id.value,
            "ofport": _ofport(info), "state": _state(info, name in details),
            "bfd": ({"state": bfd_status.get("state", "unknown"),
                     "forwarding": bfd_status.get("forwarding") == "true",
                     "remote_state": bfd_status.get("remote_state"),
                     "flaps": int(bfd_status.get("flap_count", 0))}
                    if spec.bfd else None)})

    vms = []
    warnings = []
    limit = nvgre.max_vm_mtu(underlay_mtu) if underlay_mtu else None
    for vm in sorted(fabric.vms_on(desired.host.name), key=lambda v: v.name):
        info = details.get(vm.port, {})
        stats = info.get("statistics") or {}
        mtu = info.get("mtu")
        vms.append({"name": vm.name, "port": vm.port, "vsid": fabric.vsid_of(vm),
                    "mac": vm.mac, "ca": str(vm.ca), "ofport": _ofport(info),
                    "state": ("stale: device re-created" if vm.port in kernel.stale
                              else _state(info, vm.port in details)), "mtu": mtu,
                    "rx_packets": stats.get("rx_packets", 0),
                    "tx_packets": stats.get("tx_packets", 0)})
        if limit is not None and mtu and mtu > limit:
            warnings.append(f"VM port {vm.port} ({vm.name}) has MTU {mtu}, more than the "
                            f"underlay MTU {underlay_mtu} - {nvgre.OVERHEAD} = {limit}: "
                            "larger frames are dropped in the tunnel (set overlay.vm_mtu, "
                            "or lower the VM's MTU)")
    warnings += fabrics.warnings(fabric)
    uplink = kernel.get(desired.uplink)
    if uplink is not None:
        warnings += [f"the uplink {uplink.name} holds a leased address again ({address}): a "
                     "DHCP or SLAAC client renews it on the NIC while the PA lives on the tep "
                     "port; make the address static in the host's network configuration"
                     for address in sorted(uplink.leased, key=str)]

    flows: dict[str, int] = {}
    for flow in sorted(installed, key=lambda f: f.table):
        name = pipeline.table_name(flow.table)
        flows[name] = flows.get(name, 0) + 1

    drift = [f"blocked: {blocker}" for blocker in plan.blockers] + plan.lines()
    drift += [f"port {name} refused by ovs-vswitchd: {reason}"
              for name, reason in sorted(refused.items())]
    # A stale VM port ovsnvgre owns is in the plan (attached again); one it did not
    # create is broken all the same.
    reattached = {c.name for c in plan.ovsdb if isinstance(c, PortDelete) and c.reattach}
    drift += [f"VM port {name} is dead: {stale_text(name, index)} (not ovsnvgre's Port row: "
              "`up` leaves it to its owner)"
              for name, index in sorted(kernel.stale.items()) if name not in reattached]
    return Report(host, tunnels, vms, flows, warnings, drift, list(plan.notes),
                  routing_domains(fabric, desired.host.name))


def _flow_port_rows(desired: DesiredHost, port: str, details: Details,
                    installed: set[Flow], changes: FlowChanges | None
                    ) -> list[dict[str, Any]]:
    """The flow port's tunnels, one per (peer, VSID), read from the installed flows:
    the port names no peer, the flows do.  A peer's frames are taken by the classify
    flows that match its PA (tun_src) and key, and sent by the actions that set its
    PA (tun_dst) and key before output to the port.  A direction the fabric wants and
    the switch lacks is named in the state; one the fabric does not want (a routed
    VSID is often received only) is not.  With no such flow at all, one row for the
    port itself, so that its state shows."""
    layout = desired.fabric.overlay.key_layout
    seen = _directions(installed, port, layout)
    wanted = seen
    if changes:
        wanted = _directions((installed - set(changes.delete)) | set(changes.add), port, layout)
    info = details.get(port, {})
    state = _state(info, port in details)
    peer_of = {str(host.pa.ip): name for name, host in desired.fabric.hosts.items()}
    flow_id = desired.fabric.overlay.flow_id.value
    rows = []
    for pa, vsid in seen.keys() | wanted.keys():
        missing = sorted(wanted.get((pa, vsid), set()) - seen.get((pa, vsid), set()))
        extra = sorted(seen.get((pa, vsid), set()) - wanted.get((pa, vsid), set()))
        notes = [f"{direction} flows missing" for direction in missing]
        notes += [f"{direction} flows not in the fabric" for direction in extra]
        rows.append({"port": port, "peer": peer_of.get(pa), "remote_ip": pa, "vsid": vsid,
                     "key": f"{nvgre.tunnel_key(vsid, layout):#x}", "flow_id": flow_id,
                     "ofport": _ofport(info),
                     "state": state + (f" ({', '.join(notes)})" if notes else ""),
                     "bfd": None})
    rows.sort(key=lambda row: (row["peer"] or "", row["remote_ip"], row["vsid"]))
    return rows or [{"port": port, "peer": None, "remote_ip": "flow", "vsid": None,
                     "key": "flow", "flow_id": flow_id, "ofport": _ofport(info),
                     "state": state, "bfd": None}]


def _directions(flows: set[Flow], port: str, layout: KeyLayout
                ) -> dict[tuple[str, int], set[str]]:
    """(PA, VSID) -> the directions ("receive", "send") that ``flows`` carry through
    the flow port ``port``."""
    classify = pipeline.table_of("classify")
    directions: dict[tuple[str, int], set[str]] = {}
    for flow in flows:
        if flow.table == classify and f"in_port={port}" in flow.match:
            fields = dict(token.split("=", 1) for token in flow.match if "=" in token)
            if "tun_src" in fields and "tun_id" in fields:
                vsid = nvgre.vsid_of_key(int(fields["tun_id"].split("/")[0], 16), layout)
                directions.setdefault((fields["tun_src"], vsid), set()).add("receive")
        if f"output:{port}" in flow.actions:
            for pa, key in _sent_to(flow.actions, port):
                directions.setdefault((pa, nvgre.vsid_of_key(key, layout)), set()).add("send")
    return directions


def _sent_to(actions: str, port: str) -> list[tuple[str, int]]:
    """(tun_dst, tun_id) at each output to ``port`` in an action list, in order."""
    sent = []
    tun_dst, tun_id = None, None
    for action in actions.split(","):
        if action.startswith("set_field:") and action.endswith("->tun_dst"):
            tun_dst = action[len("set_field:"):-len("->tun_dst")]
        elif action.startswith("set_field:") and action.endswith("->tun_id"):
            tun_id = int(action[len("set_field:"):-len("->tun_id")], 16)
        elif action == f"output:{port}" and tun_dst is not None and tun_id is not None:
            sent.append((tun_dst, tun_id))
    return sent


def _key_text(key: str) -> str:
    return f"{int(key):#x}" if key.isdigit() else key


def _key_column(tunnel: dict[str, Any]) -> str:
    """The KEY column: the key, and that the pipeline hashes each inner flow into its
    FlowID (overlay.flow_id: hash) where it sends with this key."""
    receive_only = tunnel["key"].startswith("flow (")
    hashed = tunnel["flow_id"] == FlowId.HASH.value and not receive_only
    return tunnel["key"] + (" + FlowID hash" if hashed else "")


def _ofport(info: dict[str, Any]) -> int | None:
    ofport = info.get("ofport")
    return ofport if isinstance(ofport, int) and ofport > 0 else None


def _state(info: dict[str, Any], exists: bool) -> str:
    if not exists:
        return "missing"
    if info.get("error"):
        return f"error: {info['error']}"
    return str(info.get("link_state") or "unknown")
