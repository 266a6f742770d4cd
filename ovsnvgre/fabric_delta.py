"""A new version of the fabric file read from the last one: when only entries of its
`vms` section changed, only those are parsed and checked (`watch`'s incremental runs).

Parsing and checking 20,000 VMs takes seconds (bench/README.md); a VM added to such a
file is one entry.  The two texts are compared line by line: the lines they share at
the start and at the end are the same YAML, so everything outside the lines between
is what the last version said.  When those lines lie inside the `vms` block (a line
``vms:`` at the top level, its entries each starting on a line at one indentation),
they are widened to whole entries, parsed alone by the same parser (fabric_yaml.py)
and checked by the same code (fabric.py's VM checks), and the rules that tie a VM to
the others (a port once per host, a MAC and a CA once per virtual subnet, a name once)
are checked against the VMs that did not change, from indexes kept here.

Anything this does not handle is left to fabric.load (``step`` returns None): a change
outside `vms`, anchors, aliases, tags or tabs in the changed lines, entries whose
boundaries the lines do not show, and any refusal (fabric.load then says, with the
file's own line numbers, what is wrong).  tests/test_fabric_delta.py holds every
result equal to fabric.loads of the whole new text.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Any

from ovsnvgre import fabric as fabrics
from ovsnvgre import fabric_cache, fabric_yaml, nvgre
from ovsnvgre.errors import FabricError
from ovsnvgre.fabric_checks import Checker
from ovsnvgre.fabric_yaml import LineMap
from ovsnvgre.model import Fabric, TunnelPorts, Vm

VMS_LINE = re.compile(r"vms:[ \t]*(#.*)?\n?$")
# What makes a line's meaning depend on lines elsewhere (anchors, aliases, merge keys,
# tags), or its indentation unclear (tabs), or the document's structure change.
UNSAFE = re.compile(r"[&*!\t]|^(---|\.\.\.|%)")


def floating(fabric: Fabric) -> set[str]:
    """The VMs a routing domain's floating IP names: fabric.py checks them against the
    VMs (fabric_external.floating_vms), so a change of one is left to fabric.load."""
    return {name for domain in fabric.routing_domains.values() if domain.external is not None
            for name in domain.external.floating_ips}


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _content(line: str) -> bool:
    """Whether ``line`` holds YAML (not blank, not a comment)."""
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


@dataclass
class Version:
    """One version of the file as read: its lines, its Fabric, where its `vms` block is
    (``block``: first and last+1 line) and where each entry starts (``starts``, with
    ``names`` in the same order), and the keys the cross-VM rules use (built on the
    first step)."""

    lines: list[str]
    fabric: Fabric
    block: tuple[int, int]
    indent: int
    starts: list[int]
    names: list[str]
    by_port: dict[tuple[str, str], str] = field(default_factory=dict)
    by_mac: dict[tuple[str, str], str] = field(default_factory=dict)
    by_ca: dict[tuple[str, Any], str] = field(default_factory=dict)
    indexed: bool = False

    def index(self) -> None:
        """The cross-VM keys of every VM (once)."""
        if self.indexed:
            return
        for vm in self.fabric.vms.values():
            self._add(vm)
        self.indexed = True

    def conflicts(self, added: Iterable[Vm], leaving: set[str]) -> bool:
        """Whether a VM of ``added`` breaks a rule with a VM that stays (not in
        ``leaving``): fabric.py's port once per host, MAC and CA once per virtual subnet
        (_vms), and a name once.  (Its other cross-VM rule, floating IPs, is ``floating``.)"""
        self.index()
        for vm in added:
            for index, key in ((self.by_port, (vm.host, vm.port)),
                               (self.by_mac, (vm.virtual_subnet, vm.mac)),
                               (self.by_ca, (vm.virtual_subnet, vm.ca.ip))):
                holder = index.get(key)
                if holder is not None and holder not in leaving:
                    return True
            if vm.name in self.fabric.vms and vm.name not in leaving:
                return True
        return False

    def _add(self, vm: Vm) -> None:
        self.by_port[vm.host, vm.port] = vm.name
        self.by_mac[vm.virtual_subnet, vm.mac] = vm.name
        self.by_ca[vm.virtual_subnet, vm.ca.ip] = vm.name

    def _remove(self, vm: Vm) -> None:
        for index, key in ((self.by_port, (vm.host, vm.port)),
                           (self.by_mac, (vm.virtual_subnet, vm.mac)),
                           (self.by_ca, (vm.virtual_subnet, vm.ca.ip))):
            if index.get(key) == vm.name:
                del index[key]


def start(text: str, fabric: Fabric) -> Version | None:
    """The Version of ``text``, which fabric.load read as ``fabric``; None when its `vms`
    section is not a block of entries one per indented key (then every change of it
    goes to fabric.load)."""
    lines = text.splitlines(keepends=True)
    found = [i for i, line in enumerate(lines) if VMS_LINE.match(line)]
    if len(found) != 1:
        return None
    first = found[0] + 1
    end = next((i for i in range(first, len(lines))
                if _content(lines[i]) and not lines[i][0].isspace()), len(lines))
    body = [i for i in range(first, end) if _content(lines[i])]
    if not body:
        return None
    indent = _indent(lines[body[0]])
    starts = [i for i in body if _indent(lines[i]) == indent]
    if indent == 0 or len(starts) != len(fabric.vms) or any(_indent(lines[i]) < indent
                                                           for i in body):
        return None
    return Version(lines, fabric, (first, end), indent, starts, list(fabric.vms))


def _common(old: list[str], new: list[str]) -> tuple[int, int]:
    """How many lines the two share at the start, and at the end (not overlapping)."""
    limit = min(len(old), len(new))
    head = 0
    while head < limit and old[head] == new[head]:
        head += 1
    tail = 0
    while tail < limit - head and old[-1 - tail] == new[-1 - tail]:
        tail += 1
    return head, tail


def step(last: Version, text: str, source: str) -> tuple[Version, set[str]] | None:
    """The next Version for the new ``text`` of the file, and the names of the VMs that
    changed; None when fabric.load must read it (see the module docstring)."""
    old, new = last.lines, text.splitlines(keepends=True)
    head, tail = _common(old, new)
    first, end = last.block
    grow = len(new) - len(old)
    if head < first or len(old) - tail > end:
        return None  # outside the `vms` block (or it is the block's own line)
    changed_old, changed_new = old[head:len(old) - tail], new[head:len(new) - tail]
    for line in changed_new:
        if UNSAFE.search(line) or _content(line) and _indent(line) < last.indent:
            return None
    if any(UNSAFE.search(line) for line in changed_old):
        return None
    # Widen to whole entries: back to the first line of the entry the first changed line
    # is in, on to the next entry's first line (the same lines in both texts: shared).
    k = bisect.bisect_right(last.starts, head) - 1
    lo = last.starts[k] if k >= 0 else first
    k = max(k, 0)
    m_end = bisect.bisect_left(last.starts, len(old) - tail)
    hi = last.starts[m_end] if m_end < len(last.starts) else end
    chunk = new[lo:hi + grow]
    chunk_starts = [lo + i for i, line in enumerate(chunk)
                    if _content(line) and _indent(line) == last.indent]
    return _parse(last, new, source, (k, m_end), chunk, chunk_starts, grow)


def _parse(last: Version, lines: list[str], source: str, span: tuple[int, int],
           chunk: list[str], chunk_starts: list[int], grow: int
           ) -> tuple[Version, set[str]] | None:
    """The new Version once the entries ``chunk`` replace those of ``span`` (entry
    positions) in ``last``; None when they are not VMs fabric.load would accept."""
    fabric = last.fabric
    try:
        document = fabric_yaml.parse("vms:\n" + "".join(chunk))
        if not isinstance(document, LineMap):
            return None
        entries = document.get("vms") or LineMap.empty()
        if not isinstance(entries, LineMap) or len(entries) != len(chunk_starts):
            return None
        # The names VM ports may not take, as fabric._build reserves them.
        reserved = {fabric.underlay.bridge: "underlay.bridge",
                    fabric.underlay.tep_port: "underlay.tep_port",
                    fabric.overlay.bridge: "overlay.bridge"}
        if fabric.overlay.tunnel_ports == TunnelPorts.FLOW:
            reserved[nvgre.FLOW_PORT] = "the GRE port of tunnel_ports: flow"
        added = fabrics._vms(document, Checker(source), fabric.hosts, fabric.virtual_subnets,
                             reserved, fabric.overlay.router_mac)
    except (fabric_yaml.DocumentError, FabricError):
        return None
    k, m_end = span
    gone = last.names[k:m_end]
    leaving = set(gone)
    if last.conflicts(added.values(), leaving) or (leaving | set(added)) & floating(fabric):
        return None
    items = fabric.vms.items()
    vms = dict(islice(items, k))
    vms.update(added)
    vms.update(islice(items, m_end, None))
    if len(vms) != len(fabric.vms) - len(gone) + len(added):
        return None  # a name of the chunk is also one after it
    for name in gone:
        last._remove(fabric.vms[name])
    for vm in added.values():
        last._add(vm)
    starts = [*last.starts[:k], *chunk_starts, *(i + grow for i in last.starts[m_end:])]
    new_fabric = replace(fabric, vms=vms, source=source)
    first, end = last.block
    version = Version(lines, new_fabric, (first, end + grow), last.indent, starts,
                      [*last.names[:k], *added, *last.names[m_end:]], last.by_port,
                      last.by_mac, last.by_ca, True)
    changed = {name for name in leaving | set(added)
               if fabric.vms.get(name) != vms.get(name)}
    return version, changed


class FabricFile:
    """The fabric file as `watch` reads it again and again: each new version from the
    last one when it can (``step``), else whole through fabric.load's cache and parser.

    Reads the file's bytes once per version, so that the text the next step starts from
    is the very text of the Fabric returned.
    """

    def __init__(self, path: Path) -> None:
        """``path``: the fabric file."""
        self.path = path
        self.version: Version | None = None
        self.uncached: tuple[bytes, Fabric] | None = None  # a stepped version to cache

    def load(self) -> tuple[Fabric, set[str] | None]:
        """The file's Fabric, and the names of the VMs that changed since the last load
        (None when it was read whole).  Raises FabricError, as fabric.load."""
        if not self.path.is_file():
            return fabrics.load(self.path), None  # its one-line error (or a race: a file)
        source = str(self.path)
        try:
            data = self.path.read_bytes()
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError):
            self.version = None
            return fabrics.load(self.path), None
        if self.version is not None:
            stepped = step(self.version, text, source)
            if stepped is not None:
                self.version, changed = stepped
                self.uncached = (data, self.version.fabric)
                return self.version.fabric, changed
        self.version = None
        cached = fabric_cache.get(data)
        if isinstance(cached, Fabric):
            fabric = replace(cached, source=source)
        else:
            fabric = fabrics.loads(data, source)
            fabric_cache.put(data, fabric)
        self.version = start(text, fabric)
        self.uncached = None
        return fabric, None

    def warm(self) -> None:
        """Build now what the next step needs: the cross-VM keys of every VM, and the YAML
        parser (a fabric read back from the cache never imported it)."""
        if self.version is not None:
            self.version.index()
            fabric_yaml.parse("{}")

    def save_cache(self) -> None:
        """Put the last stepped version in the fabric cache (the next `up` reads it back
        instead of parsing): done after the run, off the way of the change."""
        if self.uncached is not None:
            fabric_cache.put(*self.uncached)
            self.uncached = None
