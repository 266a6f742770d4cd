"""`ovsnvgre watch`: keep one host converged, driven by what changes.

Three sources wake it, each from its own thread:
- OVSDB row events (ovsdbapp RowEvents on the tables and columns a run reads):
  an owned row edited, a VM port appearing or getting its OpenFlow number, a VM's
  device deleted and made again (its Interface's ``link_state`` and ``ifindex``
  change; the run then finds the stale handle and attaches the port again);
- an `ovs-ofctl monitor` on the integration bridge the fabric names now (a reloaded
  fabric that renames it moves the monitor): a flow changed, or the OpenFlow
  connection dropped and came back (ovs-vswitchd restarted, flows lost);
- the fabric file (inotify, and its identity once a second: filewatch.py): a new
  valid file is taken, an invalid one reported and the last good one kept.
A changed fabric file whose VMs alone changed, or row events of VM and tunnel ports,
run incrementally (watch_run.py): only the rows and flows the change touches are read
and written.  Anything else runs, after a short pause to let a burst settle, the same
`up` as the command line, which writes nothing when nothing drifted.

A thread puts its reason in a deque and writes a byte to a pipe; the main loop
waits on that pipe with a bounded timeout.  Signal handlers only set a flag
(SIGTERM and SIGINT: stop; SIGHUP: run now) and ``signal.set_wakeup_fd`` makes
the signal write to the same pipe: a handler takes no lock, so it cannot deadlock
against the loop it interrupts.  Any failure of a run is logged in one line and
retried after RETRY seconds; the traceback is logged only with --debug.
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from ovsnvgre import engine, ovsdb, watch_run
from ovsnvgre import survey as surveys
from ovsnvgre.changes import Plan
from ovsnvgre.desired import desired_host
from ovsnvgre.errors import FabricError, OvsnvgreError
from ovsnvgre.fabric_delta import FabricFile
from ovsnvgre.filewatch import FileWatch, signature
from ovsnvgre.flowmonitor import FlowMonitor
from ovsnvgre.incremental import Model, vm_changes
from ovsnvgre.ovsdb.monitor import Monitor

SETTLE = 0.2        # seconds to gather a burst of events into one run
FILE_CHECK = 1.0    # seconds between looks at the fabric file
RETRY = (1, 2, 5, 10, 30)  # seconds before trying again after a failed run
Log = Callable[[str], None]
FILE_CHANGED = "the fabric file changed"
# The row events watch_run.py handles (ovsdb/monitor.py words them "Port vnet0 create").
ROW_TABLES = ("Port", "Interface", "Bridge", "Open_vSwitch")


def describe_failure(exc: BaseException) -> str:
    """A failure in one line: an OvsnvgreError's message, else its type and message."""
    if isinstance(exc, OvsnvgreError):
        return str(exc)
    return f"internal error: {type(exc).__name__}: {exc}"


class Wakeup:
    """A pipe the main loop waits on; any thread (or a signal) writes a byte to it."""

    def __init__(self) -> None:
        """Makes the pipe, both ends non-blocking (as signal.set_wakeup_fd needs)."""
        self.read_fd, self.write_fd = os.pipe()
        for fd in (self.read_fd, self.write_fd):
            os.set_blocking(fd, False)

    def poke(self) -> None:
        """Wake the loop (from any thread); a full pipe already will."""
        try:
            os.write(self.write_fd, b"\0")
        except OSError:
            pass

    def wait(self, timeout: float) -> None:
        """Wait until poked or ``timeout`` seconds passed (0 at least), then empty the pipe."""
        readable, _, _ = select.select([self.read_fd], [], [], max(0.0, timeout))
        if readable:
            try:
                while os.read(self.read_fd, 4096):
                    pass
            except BlockingIOError:
                pass

    def close(self) -> None:
        """Close both ends (once nothing writes to it any more)."""
        os.close(self.read_fd)
        os.close(self.write_fd)


class Watcher:
    """One host kept converged: the fabric file, the wake-ups, the retry state."""

    def __init__(self, config: str, host: str | None, db: str | None, timeout: float,
                 log: Log, verbose: bool = False, debug: bool = False) -> None:
        """Loads the fabric and picks the host; raises FabricError or UsageError.

        ``timeout``: seconds ovs-vswitchd has to apply a run's transaction; ``log``
        takes one message (the traceback of a failure too, with ``debug``).
        """
        self.config = Path(config)
        self.db, self.timeout, self.log = db, timeout, log
        self.verbose, self.debug = verbose, debug
        self.file = FabricFile(self.config)
        self.signature = signature(self.config)
        self.fabric, _ = self.file.load()
        self.file_event = False  # set by the file watch's thread: a new version is complete
        self.host = surveys.select_host(self.fabric, host)
        self.reasons: deque[str] = deque()  # appended by the threads, taken by the loop
        self.wakeup = Wakeup()
        # Set by the signal handlers only, read by the loop: plain attributes, no lock.
        self.stop_requested = False
        self.run_requested = False
        self.stopping = threading.Event()  # tells the threads; set by the loop only
        self.flows: FlowMonitor | None = None
        self.monitor: Monitor | None = None
        self.files = FileWatch(self.config, self.on_file_change)
        # What the last run left (None: the next run is a full one), and the VMs changed
        # in the fabric since (None: not known, compare the two fabrics).
        self.model: Model | None = None
        self.changed: set[str] | None = set()
        self.failures = 0
        self.retry_at: float | None = None
        self.waiting_for: dict[str, str] = {}
        self.notes: tuple[str, ...] = ()

    def on_file_change(self) -> None:
        """Called by the file watch (its thread) when a new version of the file is complete."""
        self.file_event = True
        self.wakeup.poke()

    def wake(self, reason: str) -> None:
        """Ask for a run, for ``reason`` (from any thread; not from a signal handler)."""
        self.reasons.append(reason)
        self.wakeup.poke()

    def on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        """The SIGTERM and SIGINT handler: asks the loop to stop, and does nothing else
        (the signal itself writes to the wake-up pipe)."""
        self.stop_requested = True

    def on_run_signal(self, signum: int, frame: FrameType | None) -> None:
        """The SIGHUP handler: asks for a run now, and does nothing else."""
        self.run_requested = True

    def run(self) -> None:
        """Converge at start, then on every wake-up, until a stop signal."""
        self.log(f"watching host {self.host} of fabric {self.fabric.name!r} "
                 f"({self.config}, {self.db or ovsdb.default_remote()})")
        self.flows = FlowMonitor(self.fabric.overlay.bridge, self.wake, self.stopping)
        self.flows.start()
        problem = self.files.start()
        if problem:
            self.log(f"{problem}; looking at the fabric file once a second instead")
        try:
            if not self.stop_requested:
                self._converge(["start"])
            self._loop()
        finally:
            self.stopping.set()
            self.files.stop()
            self.flows.stop()
            if self.monitor is not None:
                self.monitor.stop()
        self.log("stopped")

    def _loop(self) -> None:
        next_file_check = time.monotonic() + FILE_CHECK
        while not self.stop_requested:
            deadline = next_file_check
            if self.retry_at is not None:
                deadline = min(deadline, self.retry_at)
            self.wakeup.wait(deadline - time.monotonic())
            if self.stop_requested:
                return
            now = time.monotonic()
            look = now >= next_file_check or self.file_event
            if look:
                next_file_check = now + FILE_CHECK
            reasons = self._due(now, look)
            if not reasons:
                continue
            # An incremental run is over in milliseconds: no burst to wait for.
            end = time.monotonic() + (0 if self._rows(reasons) is not None else SETTLE)
            while not self.stop_requested and time.monotonic() < end:
                self.wakeup.wait(end - time.monotonic())
            if self.stop_requested:
                return
            self._converge(reasons + self._take())

    def _due(self, now: float, look: bool) -> list[str]:
        """Why to run now: the threads' reasons, a new fabric file (when ``look``ing at
        it), a retry that is due, flow events of an incremental run that never came."""
        reasons = self._take()
        if look:
            self.file_event = False
            if self._reload():
                reasons.append(FILE_CHANGED)
        if self.retry_at is not None and now >= self.retry_at:
            reasons.append("retry")
        if self.flows is not None and self.flows.overdue():
            reasons.append(f"flow events of {self.fabric.overlay.bridge} missing")
        return reasons

    def _take(self) -> list[str]:
        """Every reason given so far (the loop alone takes them)."""
        reasons = []
        while self.reasons:
            reasons.append(self.reasons.popleft())
        if self.run_requested:
            self.run_requested = False
            reasons.append("SIGHUP")
        return reasons

    def _reload(self) -> bool:
        now = signature(self.config)
        if now == self.signature:
            return False
        self.signature = now
        try:
            new, changed = self.file.load()
        except FabricError as exc:
            self.log(f"ignoring the changed fabric file, keeping the last good one: {exc}")
            return False
        except Exception as exc:  # noqa: BLE001 - the daemon keeps the last good fabric
            self.log("ignoring the changed fabric file, keeping the last good one: "
                     f"{describe_failure(exc)}")
            self._traceback(exc)
            return False
        if self.host not in new.hosts:
            self.log(f"ignoring the changed fabric file, keeping the last good one: it has "
                     f"no host {self.host!r}")
            return False
        renamed = new.overlay.bridge != self.fabric.overlay.bridge
        self.fabric = new
        self.changed = None if changed is None or self.changed is None else \
            self.changed | changed
        self.log(f"loaded the changed fabric file {self.config}"
                 + (f"; watching the flows of {new.overlay.bridge} now" if renamed else ""))
        if renamed and self.flows is not None:
            self.flows.follow(new.overlay.bridge)
        return True

    def _traceback(self, exc: BaseException) -> None:
        if self.debug:
            self.log("".join(traceback.format_exception(exc)).rstrip())

    def _rows(self, reasons: list[str]) -> set[str] | None:
        """The Port and Interface rows that ``reasons`` name, when an incremental run can
        handle every reason (a changed fabric file, row events); else None."""
        if self.model is None:
            return None
        rows: set[str] = set()
        for reason in reasons:
            if reason == FILE_CHANGED:
                continue
            table, _, rest = reason.partition(" ")
            if table not in ROW_TABLES:
                return None
            name = rest.rpartition(" ")[0]
            if table in ("Port", "Interface") and name:
                rows.add(name)
        return rows

    def _incremental(self, reasons: list[str]) -> watch_run.Outcome | None:
        """The incremental run for ``reasons``, or None when only a full run is right."""
        rows = self._rows(reasons)
        if rows is None or self.model is None or self.monitor is None or self.flows is None:
            return None
        changed = self.changed if self.changed is not None else \
            vm_changes(self.model.fabric, self.fabric)
        if changed is None:
            return None
        return watch_run.run(self.model, self.fabric, changed, rows, self.monitor, self.flows,
                             self.db or ovsdb.default_remote(), self.timeout)

    def _full(self) -> engine.RunResult:
        """The full run (`up`); the flow events of its own bundle wake nothing."""
        assert self.flows is not None  # noqa: S101 - run() starts the flow monitor first
        self.flows.hold()
        flows = None  # what the run added and deleted
        try:
            result = engine.up(self.fabric, self.host, self.db, self.timeout)
            flows = result.plan.flows
        except engine.RefusedPorts as exc:
            flows = exc.result.plan.flows
            raise
        finally:
            self.flows.release(flows.add if flows else (), flows.delete if flows else ())
            self.file.save_cache()
        return result

    def _converge(self, reasons: list[str]) -> None:
        why = ", ".join(dict.fromkeys(reasons))
        self.retry_at = None
        try:
            if self.monitor is None:
                # Started here, so that a database that is not there yet is retried.
                self.monitor = Monitor(self.db or ovsdb.default_remote(), self.wake,
                                       self.timeout)
            outcome = self._incremental(reasons)
            if outcome is not None:
                self.model, self.changed = outcome.model, set()
                self.file.save_cache()
                self.failures = 0
                refused = {name: reason for name, reason in self.waiting_for.items()
                           if name not in outcome.status and name in outcome.model.desired.ports}
                refused.update(outcome.status.refused())
                self._report(why, outcome.plan, outcome.changed, refused, incremental=True)
                return
            self.model = None
            result = self._full()
        except engine.RefusedPorts as exc:
            # A VM that is not running yet: its port's device appears later, and
            # the OVSDB event of ovs-vswitchd taking it wakes us then.
            result = exc.result
        except Exception as exc:  # noqa: BLE001 - a daemon retries whatever failed
            self.model = None
            self._failed(why, exc)
            return
        self.failures = 0
        if result.plan.flows is not None:  # the run got to its flows
            desired = desired_host(self.fabric, self.host)  # as the run's: the same fabric
            self.model = Model.known(desired, result.live, result.flows)
            self.changed = set()
            # What the first incremental run would build: done now, while nothing waits.
            self.monitor.api()
            self.file.warm()
        self._report(why, result.plan, result.changed, result.refused)

    def _failed(self, why: str, exc: Exception) -> None:
        """A run failed: log it in one line, and try again after the next RETRY delay."""
        if self.stop_requested:
            # SIGTERM or SIGINT ended the run (which put the host back as it was).
            self.log(f"stopping: the run ({why}) ended: {describe_failure(exc)}")
            self._traceback(exc)
            return
        delay = RETRY[min(self.failures, len(RETRY) - 1)]
        self.failures += 1
        self.retry_at = time.monotonic() + delay
        self.log(f"could not converge ({why}): {describe_failure(exc)}; "
                 f"trying again in {delay} s")
        self._traceback(exc)

    def _report(self, why: str, plan: Plan, changed: bool, refused: dict[str, str],
                incremental: bool = False) -> None:
        """A run ended: what it repaired, the ports it waits for, its new notes."""
        opened = sorted(set(self.waiting_for) - set(refused))
        if opened:
            self.log(f"ports open now: {', '.join(opened)}")
        if refused and refused != self.waiting_for:
            self.log(f"waiting for ports ovs-vswitchd cannot open yet: ovs-vswitchd refused "
                     f"{len(refused)} port(s): "
                     + "; ".join(f"{name}: {why}" for name, why in sorted(refused.items())))
        self.waiting_for = dict(refused)
        if changed:
            changes = "; ".join(plan.lines())
            self.log(f"repaired ({why}): {changes}")
        elif self.verbose:
            self.log(f"checked ({why}): no drift")
        for note in plan.notes:
            if note not in self.notes:
                self.log(f"note: {note}")
        # An incremental run read only some rows: the notes of the others stay.
        self.notes = tuple(dict.fromkeys(self.notes + plan.notes)) if incremental \
            else plan.notes

def run(config: str, host: str | None, db: str | None, timeout: float, log: Log,
        verbose: bool = False, debug: bool = False) -> None:
    """Watch until SIGTERM or SIGINT; SIGHUP asks for a run now.

    Call it from the main thread (it installs the signal handlers, and puts the
    previous ones back at the end).  Raises FabricError or UsageError for a bad
    fabric or host, or a --db that is not this machine's switch, at start; every later
    failure is logged and retried.
    """
    # Refused at once, not retried for ever: watch's runs change this machine.
    engine.require_local(ovsdb.remote.absolute(db or ovsdb.default_remote()))
    watcher = Watcher(config, host, db, timeout, log, verbose, debug)
    handlers = {signal.SIGTERM: watcher.on_stop_signal, signal.SIGINT: watcher.on_stop_signal,
                signal.SIGHUP: watcher.on_run_signal}
    previous = {number: signal.getsignal(number) for number in handlers}
    previous_fd = signal.set_wakeup_fd(watcher.wakeup.write_fd, warn_on_full_buffer=False)
    try:
        for number, handler in handlers.items():
            signal.signal(number, handler)
        watcher.run()
    finally:
        signal.set_wakeup_fd(previous_fd)
        for number, handler in previous.items():
            signal.signal(number, handler)
        if watcher.flows is None or not watcher.flows.thread.is_alive():
            watcher.wakeup.close()  # nothing writes to it any more
