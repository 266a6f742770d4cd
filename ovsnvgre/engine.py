"""Converge one host in named phases: the path `up`, `down` and `watch` share.

It starts with the survey `plan` shows (survey.py), then, in this order:

    lock     one run at a time on this host (safe/lock.py; waits --wait seconds)
    guard    adopt the rollback state of a run that died (its snapshot stays the state
             to return to); refuse only while a confirmation timer is alive
    survey   read and plan (the same survey as `plan`)
    preflight  refuse, before any change, a host whose uplink cannot be taken over
    check    probe the underlay before any change (when the plan touches it)
    external the routing domains' namespaces on a gateway host (last on `down`)
    ovsdb    all row changes in one transaction (the rollback file is saved first)
    kernel   addresses, routes and links, off the uplink and onto the tep port
    verify   probe again; roll back by itself if the host lost its underlay
    flows    plan the flows for the ports that now exist, apply them in one bundle
    finish   drop the rollback file, or hand it to the `--confirm` timer
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from subprocess import Popen
from typing import Any

from ovsnvgre import externalhost, netlink, openflow
from ovsnvgre.actual import PortStatus
from ovsnvgre.changes import BridgeDelete, Plan, PortCreate, PortDelete
from ovsnvgre.desired import DesiredHost, Role, desired_host
from ovsnvgre.errors import SystemFailure
from ovsnvgre.model import Fabric
from ovsnvgre.openflow import FlowDump
from ovsnvgre.ovsdb import Switch, default_remote
from ovsnvgre.ovsdb.remote import absolute, missing_socket
from ovsnvgre.ovsdb.switch import NotApplied
from ovsnvgre.pipeline import Flow
from ovsnvgre.plan import with_flows
from ovsnvgre.progress import Progress, quiet
from ovsnvgre.safe import journal, snapshot
from ovsnvgre.safe.lock import DEFAULT_WAIT, HostLock
from ovsnvgre.safe.restore import left_behind, restore_record
from ovsnvgre.safe.rollback import start_timer
from ovsnvgre.safe.verify import Check, targets, touches_underlay
from ovsnvgre.survey import (
    changed_flows,
    gc_paused,
    integration_bridge,
    require_local,
    survey,
    wanted_flows,
)

DEFAULT_TIMEOUT = 30.0  # seconds ovs-vswitchd has to apply a transaction


@dataclass(frozen=True)
class RunResult:
    """What `up` or `down` did: the plan, and how many writes of each kind it made."""

    plan: Plan
    ovsdb_writes: int = 0
    kernel_changes: int = 0
    flow_mods: int = 0
    refused: dict[str, str] = field(default_factory=dict)
    check: Check | None = None
    # With --confirm: the process that rolls the run back unless it is confirmed.
    timer: Popen | None = None
    live: frozenset[str] = frozenset()  # the ports with an OpenFlow number, and
    # the flows installed for them (watch keeps both), built when first asked: a run
    # that found its bridge converged by the flow cache never built them.
    flows_of: Callable[[], frozenset[Flow]] = field(default=frozenset, repr=False)
    # What a rollback of the run would not restore (safe/restore.left_behind), or "".
    left: str = ""

    @property
    def flows(self) -> frozenset[Flow]:
        """The flows installed for ``live``."""
        return self.flows_of()

    @property
    def changed(self) -> bool:
        """Whether the run wrote anything."""
        return bool(self.ovsdb_writes or self.kernel_changes or self.flow_mods)


class RefusedPorts(SystemFailure):
    """ovs-vswitchd refused ports; everything else of the run was applied (``result``)."""

    def __init__(self, result: RunResult, message: str) -> None:
        super().__init__(message)
        self.result = result


class UnderlayLost(SystemFailure):
    """A run failed after its first change (the underlay check, an OVSDB, netlink or
    ovs-ofctl error, SIGTERM/SIGINT) and the host was put back as it was before it."""


class Interrupted(SystemFailure):
    """SIGTERM, SIGINT or SIGHUP arrived while a run was changing the host."""


class Signals:
    """The signals that end a run, received while it changes the host."""

    def __init__(self) -> None:
        self.received: str | None = None
        self.previous: dict[int, Any] = {}

    def check(self) -> None:
        """Raise Interrupted if a signal came, even if some code swallowed the exception
        its handler raised (checked between the phases)."""
        if self.received is not None:
            raise Interrupted(f"interrupted by {self.received}")


@contextlib.contextmanager
def signals_raise() -> Iterator[Signals]:
    """While changing the host, SIGTERM, SIGINT and SIGHUP (an SSH session that drops)
    raise Interrupted, so that the run restores the state before it instead of dying
    half-way.  A handler the process had already (watch's) is called too; SIGHUP only
    interrupts a process that had no handler of its own for it.  Main thread only."""
    signals = Signals()
    if threading.current_thread() is not threading.main_thread():
        yield signals
        return

    def interrupt(number: int, frame: Any) -> None:
        previous = signals.previous.get(number)
        if callable(previous) and previous is not signal.default_int_handler:
            previous(number, frame)
            if number == signal.SIGHUP:
                return
        if signals.received is None:
            signals.received = signal.Signals(number).name
            raise Interrupted(f"interrupted by {signals.received}")

    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signals.previous[number] = signal.signal(number, interrupt)
    try:
        yield signals
    finally:
        for number, handler in signals.previous.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """While restoring, SIGTERM and SIGINT wait: a half-done restore helps nobody."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    blocked = {signal.SIGTERM, signal.SIGINT}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class Converge:
    """One `up` or `down` on one switch, phase by phase (see the module docstring)."""

    def __init__(self, desired: DesiredHost, switch: Switch, removing: bool,
                 progress: Progress) -> None:
        self.desired, self.switch, self.removing, self.progress = (desired, switch, removing,
                                                                    progress)
        self.path = journal.path_for(switch.remote)
        self.record: journal.Record | None = None
        self.check: Check | None = None
        self.ovsdb_writes = self.kernel_changes = self.flow_mods = 0
        self.status = PortStatus()
        self.timer: Popen | None = None
        self.wanted: Callable[[], frozenset[Flow]] = frozenset

    def guard(self) -> None:
        """Take over the rollback state of a run that died (see journal.adopt)."""
        adopted = journal.adopt(self.path, "down" if self.removing else "up")
        if adopted is not None:
            self.record = adopted
            self.progress(f"taking over the unfinished run whose state is saved in "
                          f"{self.path}: converging, and returning to that state if the "
                          "underlay check fails")

    def survey(self) -> None:
        """Read and plan, as `plan` does (flows come later, once the ports exist)."""
        self.progress(f"reading {self.switch.remote} and the kernel")
        prior = self.record.snapshot.ports if self.record is not None else None
        self.found = survey(self.desired, self.switch, self.removing, flows=False, prior=prior)
        self.plan = self.found.plan
        self.installed = self.found.installed

    def preflight(self) -> None:
        """Raises SystemFailure (nothing changed) when the host cannot be taken over."""
        blockers = self.plan.blockers
        if blockers:
            more = f" (and {len(blockers) - 1} more: `ovsnvgre plan` lists them)" \
                if len(blockers) > 1 else ""
            raise SystemFailure(f"host {self.desired.host.name}: {blockers[0]}{more}; "
                                "nothing was changed")

    def save_before_changing(self) -> None:
        """The rollback file, written once, before the run's first change."""
        if self.record is not None:
            return
        desired, found = self.desired, self.found
        self.record = journal.Record(
            command="down" if self.removing else "up", fabric=desired.fabric.name,
            host=desired.host.name, db=self.switch.remote, pid=os.getpid(),
            started=time.time(),
            snapshot=snapshot.take(desired.owner, desired.host.name, found.actual,
                                   found.kernel, desired.fabric.overlay.bridge,
                                   self.installed.flows(found.wanted() if self.installed.lines
                                                        else None)))
        journal.save(self.path, self.record)

    def start_check(self, verify: bool) -> None:
        """Probe the underlay before the change, when the plan touches it."""
        if not verify or not touches_underlay(self.desired, self.plan):
            return
        probes = targets(self.desired, self.plan, self.removing)
        if probes:
            self.progress("probing " + ", ".join(str(t.address) for t in probes)
                          + " before the change")
            self.check = Check.start(probes)

    def apply_ovsdb(self) -> None:
        """All row changes in one transaction (two when VM ports are attached again),
        after saving the rollback state."""
        if not self.plan.ovsdb:
            return
        self.save_before_changing()
        reattached = sum(1 for change in self.plan.ovsdb
                         if isinstance(change, PortDelete) and change.reattach)
        # Switch.apply attaches re-created VM devices again in a second transaction.
        how = (f"in two transactions ({reattached} port(s) attached again in the second)"
               if reattached else "in one transaction")
        self.progress(f"applying {len(self.plan.ovsdb)} OVSDB changes {how}")
        # The flows the ports will need, while ovs-vswitchd makes the ports.
        self.ovsdb_writes = self.switch.apply(
            self.plan.ovsdb, meanwhile=None if self.removing else self.found.wanted)

    def apply_kernel(self) -> None:
        """Addresses, routes, links and IPv6 settings, in the planned order."""
        if not self.plan.kernel:
            return
        self.save_before_changing()
        self.progress(f"applying {len(self.plan.kernel)} address, route and link changes")
        tep_created = any(isinstance(c, PortCreate) and c.spec.role == Role.TEP
                          for c in self.plan.ovsdb)
        self.kernel_changes += netlink.apply(
            self.plan.kernel, wait_for=[self.desired.tep_port] if tep_created else [])

    def verify(self) -> None:
        """Raises UnderlayLost after rolling back when the check fails."""
        if self.check is None:
            return
        failures = self.check.finish()
        if failures:
            what = (f"host {self.desired.host.name}: the underlay check failed after the "
                    f"change: {'; '.join(failures)}")
            overlay = "" if self.removing else "; the overlay was not applied"
            raise self.roll_back(what, f"{overlay} (--no-verify skips this check)")
        self.progress("underlay check passed: " + "; ".join(self.check.lines())
                      + f" ({self.check.seconds:.2f} s)")

    def roll_back(self, what: str, more: str = "") -> SystemFailure:
        """Restore the state saved before the run, after ``what`` went wrong; returns the
        error to raise: UnderlayLost when the host is back as it was, a SystemFailure
        saying what is left when restoring failed too (the rollback state is kept)."""
        assert self.record is not None  # noqa: S101 - an invariant the code above guarantees, not input checking
        self.progress(f"{what}: restoring the state before the run")
        with signals_deferred():
            try:
                undone = restore_record(self.switch, self.record, self.progress)
            except Exception as exc:  # noqa: BLE001 - whatever it is, say what is left
                return SystemFailure(
                    f"{what}; restoring the state before the run failed too ({exc}): it is "
                    f"kept in {self.path} - the next `ovsnvgre up` takes it over, `ovsnvgre "
                    "rollback` tries the restore again")
            journal.remove(self.path)
        return UnderlayLost(f"{what}. Rolled back: the host is as it was before the run "
                            f"({undone} changes undone){left_behind(self.record)}{more}")

    def apply_flows(self) -> None:
        """Plan the flows for the ports that exist now; apply them in one bundle."""
        # The flows name ports, so they are planned once the ports exist.
        desired = self.desired
        wanted = set() if self.removing else set(desired.ports)
        if self.ovsdb_writes:
            self.status = self.switch.port_status(wanted, wait=5.0)
            bridge = integration_bridge(desired, self.switch.bridge_external_ids())
            # Flows dumped before the change name ports by name; only a deleted
            # port (or bridge) changes how the installed flows read now.
            if bridge is None:
                self.installed = FlowDump()
            elif any(isinstance(c, PortDelete | BridgeDelete) for c in self.plan.ovsdb):
                self.installed = openflow.dump_lines(bridge)
        else:
            self.status = self.found.actual.interfaces.only(wanted)
        live = self.status.live()
        flow_changes = changed_flows(self.found, live, self.installed, self.removing)
        self.wanted = lambda: frozenset(wanted_flows(self.found, live, self.removing).values())
        self.plan = with_flows(self.plan, flow_changes)
        if not flow_changes:
            return
        self.save_before_changing()
        self.progress(f"applying {len(flow_changes.add) + len(flow_changes.delete)} flow "
                      "changes in one bundle")
        self.flow_mods = openflow.apply(flow_changes.bridge, flow_changes.add,
                                        flow_changes.delete)

    def finish(self, confirm: float | None) -> None:
        """Drop the rollback state, or hand it to the `--confirm` timer."""
        if self.record is None:
            return
        if confirm is None:
            journal.remove(self.path)
        else:
            self.timer = start_timer(self.path, self.record, confirm)

    def result(self) -> RunResult:
        """What the run did."""
        return RunResult(self.plan, self.ovsdb_writes, self.kernel_changes, self.flow_mods,
                         self.status.refused(), self.check, self.timer,
                         frozenset(self.status.live()), self.wanted,
                         left_behind(self.record) if self.record else "")


def up(fabric: Fabric, host: str, db: str | None = None, timeout: float = DEFAULT_TIMEOUT,
       progress: Progress = quiet, verify: bool = True, confirm: float | None = None,
       wait: float = DEFAULT_WAIT) -> RunResult:
    """Make ``host`` match the fabric.

    ``timeout``: seconds ovs-vswitchd has to apply the transaction; ``verify``:
    check the underlay after moving it and roll back if lost; ``confirm``: seconds
    to wait for `ovsnvgre confirm` before a detached timer rolls back; ``wait``:
    seconds to wait for another run on this host to finish.  Raises RefusedPorts
    (the rest applied), UnderlayLost (rolled back), UsageError (``db`` is not this
    machine's switch) or SystemFailure.
    """
    return _converge(fabric, host, db, False, timeout, progress, verify, confirm, wait)


def down(fabric: Fabric, host: str, db: str | None = None, timeout: float = DEFAULT_TIMEOUT,
         progress: Progress = quiet, verify: bool = True, confirm: float | None = None,
         wait: float = DEFAULT_WAIT) -> RunResult:
    """Remove every row and flow ovsnvgre owns on this switch, and give the uplink back
    its addresses; the arguments and errors are those of ``up``."""
    return _converge(fabric, host, db, True, timeout, progress, verify, confirm, wait)


def _converge(fabric: Fabric, host: str, db: str | None, removing: bool, timeout: float,
              progress: Progress, verify: bool, confirm: float | None, wait: float
              ) -> RunResult:
    desired = desired_host(fabric, host)
    remote = absolute(db or default_remote())
    require_local(remote)
    missing = missing_socket(remote)
    if missing is not None:
        raise missing
    with gc_paused(), HostLock(journal.path_for(remote).parent, "down" if removing else "up",
                               wait, progress), Switch(remote, timeout) as switch:
        run = Converge(desired, switch, removing, progress)
        run.guard()
        run.survey()
        run.preflight()
        try:
            with signals_raise() as signals:
                for phase in (lambda: run.start_check(verify),
                              lambda: externalhost.phase(run, False), run.apply_ovsdb,
                              run.apply_kernel, run.verify, run.apply_flows,
                              lambda: externalhost.phase(run, True), lambda: run.finish(confirm)):
                    phase()
                    signals.check()
        except (SystemFailure, KeyboardInterrupt) as exc:
            if run.record is None or isinstance(exc, UnderlayLost) or not run.path.exists():
                raise
            what = exc if isinstance(exc, SystemFailure) else "interrupted by SIGINT"
            if isinstance(exc, NotApplied):
                # A restore is one more transaction for the same absent ovs-vswitchd: it
                # would wait the whole timeout again and fail the same way.
                raise SystemFailure(f"host {host}: {what}; the state before the run was not "
                                    f"restored (ovs-vswitchd applies nothing): it is kept in "
                                    f"{run.path} - the next `ovsnvgre up` takes it over, "
                                    "`ovsnvgre rollback` restores it") from exc
            raise run.roll_back(f"host {host}: {what}") from exc
    result = run.result()
    if result.refused:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in sorted(result.refused.items()))
        raise RefusedPorts(result, f"ovs-vswitchd refused {len(result.refused)} port(s): "
                                   f"{reasons}")
    return result
