"""The change vocabulary: every change a run can make, and the Plan that lists them.

Pure data with a one-line description each; plan.py decides which changes a
host needs, the I/O edges (ovsdb/, netlink.py, openflow.py) carry them out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ovsnvgre.actual import Address
from ovsnvgre.desired import BridgeSpec, PortSpec, RouteSpec
from ovsnvgre.external import ExternalChange
from ovsnvgre.pipeline import Flow, describe, table_name

Action = Literal["add", "delete"]


@dataclass(frozen=True)
class BridgeCreate:
    """A new Bridge row (with its local internal port)."""

    spec: BridgeSpec

    def describe(self) -> str:
        return f"create bridge {self.spec.name} (datapath_type={self.spec.datapath_type})"


@dataclass(frozen=True)
class BridgeUpdate:
    """Columns and external_ids keys to set on an owned bridge; stale owned keys to drop."""

    name: str
    columns: dict[str, Any]
    external_ids: dict[str, str]
    stale_ids: tuple[str, ...]

    def describe(self) -> str:
        changed = sorted([*self.columns, *(["external_ids"] if self.external_ids or
                                           self.stale_ids else [])])
        return f"update bridge {self.name}: {', '.join(changed)}"


@dataclass(frozen=True)
class BridgeDelete:
    """An owned bridge removed with everything on it."""

    name: str

    def describe(self) -> str:
        return f"delete bridge {self.name}"


@dataclass(frozen=True)
class PortCreate:
    """A new Port row with one Interface; ``extra_ids`` go on the Port row only."""

    spec: PortSpec
    extra_ids: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        kind = f" type={self.spec.iface_type}" if self.spec.iface_type else ""
        options = "".join(f" {k}={v}" for k, v in sorted(self.spec.options.items()))
        return f"add {self.spec.role} port {self.spec.name} to {self.spec.bridge}{kind}{options}"


@dataclass(frozen=True)
class PortUpdate:
    """An owned port repaired in place; None leaves a column as it is."""

    spec: PortSpec
    iface_type: str | None
    options: dict[str, str] | None
    external_ids: dict[str, str]
    stale_ids: tuple[str, ...]
    reason: str
    bfd: dict[str, str] | None = None
    mtu_request: int | None = None
    mac: str | None = None

    def describe(self) -> str:
        return f"repair {self.spec.role} port {self.spec.name}: {self.reason}"


@dataclass(frozen=True)
class PortDelete:
    """An owned port removed from its bridge (``bridge`` None: a row no bridge holds).

    ``reattach`` (why, when set): a PortCreate of the same name follows, in a second
    transaction, so that ovs-vswitchd opens the port's device afresh.
    """

    name: str
    bridge: str | None
    role: str
    reattach: str = ""

    def describe(self) -> str:
        where = f" from {self.bridge}" if self.bridge else ""
        if self.reattach:
            return f"remove {self.role} port {self.name}{where} to attach it again: " \
                   f"{self.reattach}"
        return f"remove {self.role} port {self.name}{where}"


@dataclass(frozen=True)
class PortRecord:
    """Records kept in an owned Port row's external_ids (what the tep port holds)."""

    name: str
    ids: dict[str, str]

    def describe(self) -> str:
        return f"record on port {self.name}: {', '.join(sorted(self.ids))}"


@dataclass(frozen=True)
class AddressChange:
    """An address added to or deleted from a link."""

    action: Action
    link: str
    address: Address

    def describe(self) -> str:
        preposition = "to" if self.action == "add" else "from"
        return f"{self.action} address {self.address} {preposition} {self.link}"


@dataclass(frozen=True)
class RouteChange:
    """A main-table route added to or deleted from a link."""

    action: Action
    link: str
    route: RouteSpec

    def describe(self) -> str:
        return f"{self.action} route {self.route} dev {self.link}"


@dataclass(frozen=True)
class Ipv6Setting:
    """One of a link's IPv6 sysctls (net.ipv6.conf.LINK.SETTING), set before addresses move."""

    link: str
    setting: str
    value: str

    def describe(self) -> str:
        return f"set net.ipv6.conf.{self.link}.{self.setting}={self.value}"


@dataclass(frozen=True)
class LinkUp:
    """A link set administratively up."""

    link: str

    def describe(self) -> str:
        return f"set link {self.link} up"


@dataclass(frozen=True)
class LinkDown:
    """A link set administratively down."""

    link: str

    def describe(self) -> str:
        return f"set link {self.link} down"


OvsdbChange = (BridgeCreate | BridgeUpdate | BridgeDelete | PortCreate | PortUpdate
               | PortDelete | PortRecord)
KernelChange = AddressChange | RouteChange | LinkUp | LinkDown | Ipv6Setting


@dataclass(frozen=True)
class FlowChanges:
    """The flow-mods that take the bridge's owned flows to the desired pipeline."""

    bridge: str
    add: tuple[Flow, ...] = ()
    delete: tuple[Flow, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.add or self.delete)

    def per_table(self) -> dict[str, tuple[int, int]]:
        """(added, deleted) per stage name."""
        counts: dict[str, tuple[int, int]] = {}
        for flows, index in ((self.add, 0), (self.delete, 1)):
            for flow in flows:
                name = table_name(flow.table)
                pair = list(counts.get(name, (0, 0)))
                pair[index] += 1
                counts[name] = (pair[0], pair[1])
        return counts

    def lines(self, verbose: bool = False) -> list[str]:
        """Counts per table, or (verbose) one line per flow added or deleted.

        A table whose added flows hash the FlowID into the tunnel key says so
        (``overlay.flow_id: hash``).
        """
        if verbose:
            return ([f"add flow {text}" for text in sorted(map(describe, self.add))]
                    + [f"delete flow {text}" for text in sorted(map(describe, self.delete))])
        hashing = {table_name(flow.table) for flow in self.add if flow.hashes_flow_id}
        return [f"flows in table {table} of {self.bridge}: +{added} -{deleted}"
                + (" (tunnel keys: VSID << 8 + FlowID hash)" if table in hashing else "")
                for table, (added, deleted) in sorted(self.per_table().items())]


@dataclass(frozen=True)
class Plan:
    """Everything one run changes on one host, in the order it is applied."""

    host: str
    ovsdb: tuple[OvsdbChange, ...] = ()
    # In the order they must run: away from the uplink first, then onto the tep port.
    kernel: tuple[KernelChange, ...] = ()
    flows: FlowChanges | None = None
    notes: tuple[str, ...] = ()
    # What makes `up` refuse before any change (preflight.py), one line each.
    blockers: tuple[str, ...] = ()
    # The routing domains' external sides on this gateway host (issue 19).
    external: tuple[ExternalChange, ...] = ()

    @property
    def empty(self) -> bool:
        """Whether the host already matches."""
        return not self.ovsdb and not self.kernel and not self.flows and not self.external

    def lines(self, verbose: bool = False) -> list[str]:
        """One line per change (flows per table unless ``verbose``)."""
        lines = [change.describe() for change in (*self.ovsdb, *self.kernel, *self.external)]
        if self.flows:
            lines += self.flows.lines(verbose)
        return lines

    def as_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data (`plan --json`)."""
        flows = self.flows or FlowChanges("")
        return {"host": self.host, "changes": self.lines(), "notes": list(self.notes),
                "blockers": list(self.blockers),
                "ovsdb_changes": len(self.ovsdb), "kernel_changes": len(self.kernel),
                "flow_changes": {"add": len(flows.add), "delete": len(flows.delete),
                                 "per_table": {t: {"add": a, "delete": d}
                                               for t, (a, d) in flows.per_table().items()},
                                 "flows": flows.lines(verbose=True)}}
