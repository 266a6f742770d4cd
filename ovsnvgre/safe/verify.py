"""Does the host still reach its underlay after a run moved it?

What is checked (`targets`, pure): the gateway of every route the run adds (on
the link it adds it to), the fabric's own gateway after `up` (the peer routes go
through it, so it must answer even if nothing reached it before), and the
fabric's `underlay.probe` addresses.  `Check.before` records what answers before
any change; `Check.after` requires the same (and the fabric's gateway) to answer
afterwards.  Gateways are checked with ARP, on-link probes too, routed probes
with an ICMP echo.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field
from typing import Any

from ovsnvgre import netlink
from ovsnvgre.changes import (
    BridgeCreate,
    BridgeDelete,
    BridgeUpdate,
    OvsdbChange,
    Plan,
    PortCreate,
    PortDelete,
    PortRecord,
    PortUpdate,
    RouteChange,
)
from ovsnvgre.desired import DesiredHost, Role
from ovsnvgre.safe import probe

IPv4 = ipaddress.IPv4Address
BEFORE_TIMEOUT = 1.0
# A bridge that was just made may take a moment to pass its first frames.
AFTER_TIMEOUT = 3.0


@dataclass(frozen=True)
class Target:
    """An address that must still answer after the change, and why."""

    address: IPv4
    why: str
    # Must answer after the change even if it did not answer before.
    required: bool = False
    # The link it must answer ARP on after the change; None: wherever the kernel
    # routes it then.
    link_after: str | None = None


def touches_underlay(desired: DesiredHost, plan: Plan) -> bool:
    """Whether the plan moves addresses, routes, the uplink or the underlay bridge."""
    return bool(plan.kernel) or any(_underlay_row(desired, c) for c in plan.ovsdb)


def _underlay_row(desired: DesiredHost, change: OvsdbChange) -> bool:
    bridge = desired.fabric.underlay.bridge
    if isinstance(change, BridgeCreate):
        return change.spec.name == bridge
    if isinstance(change, BridgeUpdate | BridgeDelete):
        return change.name == bridge
    if isinstance(change, PortCreate | PortUpdate):
        return change.spec.role in (Role.TEP, Role.UPLINK)
    if isinstance(change, PortDelete):
        return change.role in (Role.TEP, Role.UPLINK) or change.bridge == bridge
    if isinstance(change, PortRecord):
        return False  # a record, nothing the data path sees
    return False


def targets(desired: DesiredHost, plan: Plan, removing: bool) -> list[Target]:
    """What the underlay check probes for this plan (see the module docstring)."""
    found: dict[IPv4, Target] = {}

    def add(target: Target) -> None:
        old = found.get(target.address)
        if old is None:
            found[target.address] = target
            return
        found[target.address] = Target(
            target.address, old.why if target.why in old.why else f"{old.why}; {target.why}",
            old.required or target.required, old.link_after or target.link_after)

    gateway = desired.host.gateway
    if gateway is not None and not removing:
        add(Target(gateway, "the fabric's gateway", True, desired.tep_port))
    for change in plan.kernel:
        if isinstance(change, RouteChange) and change.action == "add" \
                and isinstance(change.route.gateway, IPv4):
            dst = change.route.dst
            name = "the default route" if dst.prefixlen == 0 else f"route {dst}"
            add(Target(change.route.gateway, f"gateway of {name}", False, change.link))
    for address in desired.fabric.underlay.probe:
        add(Target(address, "underlay probe"))
    return list(found.values())


@dataclass
class Check:
    """One run's underlay check: what answered before, what answers after."""

    targets: list[Target]
    before: set[IPv4] = field(default_factory=set)
    after: set[IPv4] = field(default_factory=set)
    methods: dict[IPv4, str] = field(default_factory=dict)
    seconds: float = 0.0

    @classmethod
    def start(cls, targets: list[Target]) -> Check:
        """Probe ``targets`` before the change (1 s at most) and remember who answered."""
        check = cls(targets)
        began = time.monotonic()
        check.before = _answering([(t, None) for t in targets], BEFORE_TIMEOUT, {})
        check.seconds += time.monotonic() - began
        return check

    def finish(self) -> list[str]:
        """Probe again; the failures, one phrase each (empty when the host is fine)."""
        began = time.monotonic()
        self.after = _answering([(t, t.link_after) for t in self.targets], AFTER_TIMEOUT,
                                self.methods)
        self.seconds += time.monotonic() - began
        return [f"{t.address} ({t.why}) did not answer "
                f"{self.methods.get(t.address, 'on any link')}"
                + ("" if t.address in self.before else " (nor before the change)")
                for t in self.targets
                if (t.required or t.address in self.before) and t.address not in self.after]

    def as_dict(self) -> dict[str, Any]:
        """The check as JSON-ready data (`--json`); seconds spent probing included."""
        return {"seconds": round(self.seconds, 3), "targets": [
            {"address": str(t.address), "why": t.why, "required": t.required,
             "answered_before": t.address in self.before,
             "answered_after": t.address in self.after,
             "how": self.methods.get(t.address)} for t in self.targets]}

    def lines(self) -> list[str]:
        """One line per target that answered after the change."""
        return [f"{t.address} ({t.why}) answered {self.methods.get(t.address, '')}".rstrip()
                for t in self.targets if t.address in self.after]


def _answering(probes: list[tuple[Target, str | None]], timeout: float,
               methods: dict[IPv4, str]) -> set[IPv4]:
    """Which targets answer: ARP per link, all links and echoes at once per kind."""
    by_link: dict[str, dict[IPv4, IPv4 | None]] = {}
    routed: list[IPv4] = []
    for target, link in probes:
        if link is not None:
            by_link.setdefault(link, {})[target.address] = _source_on(link, target.address)
            methods[target.address] = f"ARP on {link}"
            continue
        hop = netlink.next_hop(target.address)
        if hop is None:
            methods[target.address] = "(no route to it)"
        elif hop.gateway is None:
            by_link.setdefault(hop.link, {})[target.address] = hop.source
            methods[target.address] = f"ARP on {hop.link}"
        else:
            routed.append(target.address)
            methods[target.address] = f"ICMP echo via {hop.gateway} on {hop.link}"
    answered = probe.ping(routed, timeout) if routed else set()
    for link, addresses in by_link.items():
        answered |= probe.arp(link, addresses, timeout)
    return answered


def _source_on(link: str, target: IPv4) -> IPv4 | None:
    addresses = netlink.ipv4_addresses(link)
    for address in addresses:
        if target in address.network:
            return address.ip
    return addresses[0].ip if addresses else None
