"""`ovsnvgre watch`: keep one host converged, driven by what changes.

Three sources wake it, each from its own thread:
- OVSDB row events (ovsdbapp RowEvents on the tables and columns a run reads):
  an owned row edited, a VM port appearing or getting its OpenFlow number, a VM's
  device deleted and made again (its Interface's ``link_state`` and ``ifindex``
  change; the run then finds the stale handle and attaches the port again);
- an `ovs-ofctl monitor` on the integration bridge the fabric names now (a reloaded
  fabric that renames it moves the monitor): a flow changed, or the OpenFlow
  connection dropped and came back (ovs-vswitchd restarted, flows lost);
- the fabric file's modification time, checked once a second: a new valid file
  is taken, an invalid one reported and the last good one kept.
Each wake-up (with a short pause to let a burst settle) runs the same `up` as
the command line, which writes nothing when nothing drifted.

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
import subprocess
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from ovsnvgre import engine, fabric, ovsdb
from ovsnvgre import survey as surveys
from ovsnvgre.errors import FabricError, OvsnvgreError

SETTLE = 0.2        # seconds to gather a burst of events into one run
FILE_CHECK = 1.0    # seconds between looks at the fabric file
RETRY = (1, 2, 5, 10, 30)  # seconds before trying again after a failed run
MONITOR_RESTART = 0.5  # seconds between two starts of the flow monitor
Log = Callable[[str], None]


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


class FlowMonitor:
    """`ovs-ofctl monitor BRIDGE watch:!initial`, restarted whenever it ends, on the
    bridge last given to ``follow``."""

    def __init__(self, bridge: str, wake: Callable[[str], None], stopping: threading.Event
                 ) -> None:
        """``wake(reason)`` is called from the monitor's thread on every flow event."""
        self.bridge, self.wake, self.stopping = bridge, wake, stopping
        self.lock = threading.Lock()  # guards bridge and process between the two threads
        self.process: subprocess.Popen[str] | None = None
        self.thread = threading.Thread(target=self._run, name="flow-monitor", daemon=True)

    def start(self) -> None:
        """Start monitoring in a daemon thread."""
        self.thread.start()

    def follow(self, bridge: str) -> None:
        """Monitor ``bridge`` from now on (a reloaded fabric renamed the integration
        bridge): the running monitor is stopped and one on ``bridge`` started."""
        with self.lock:
            if bridge == self.bridge:
                return
            self.bridge = bridge
            if self.process is not None and self.process.poll() is None:
                self.process.terminate()

    def _run(self) -> None:
        connected_to: str | None = None  # the bridge the last monitor connected to
        while not self.stopping.is_set():
            with self.lock:
                bridge = self.bridge
                try:
                    # The flow events come on its stderr, the first reply on stdout.
                    self.process = process = subprocess.Popen(  # noqa: S603 - a fixed argv, no shell, no user-supplied program
                        ["ovs-ofctl", "monitor", bridge, "watch:!initial"],  # noqa: S607 - OVS tools are found on PATH, as OVS's own scripts find them
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                except FileNotFoundError:
                    self.wake("ovs-ofctl not found: flows are not watched")
                    return
                except OSError as exc:
                    self.wake(f"cannot start ovs-ofctl monitor {bridge}: {exc.strerror}")
                    process = None
            if process is not None:
                connected_to = self._read(process, bridge, connected_to)
            if self.stopping.is_set():
                return
            self.stopping.wait(MONITOR_RESTART)

    def _read(self, process: subprocess.Popen[str], bridge: str, connected_to: str | None
              ) -> str | None:
        """Wake on each event of one monitor until it ends; returns the bridge it connected
        to (or ``connected_to`` when it never connected)."""
        assert process.stdout is not None  # noqa: S101 - an invariant the code above guarantees, not input checking
        connected = False
        for line in process.stdout:
            if not connected and line.startswith("NXST_FLOW_MONITOR reply"):
                # Connected.  The first time, the run that made the bridge covers it;
                # after that, ovs-vswitchd came back and may have lost every flow.
                connected = True
                if connected_to == bridge:
                    self.wake(f"OpenFlow connection to {bridge} is back")
                connected_to = bridge
            elif "event=" in line:
                self.wake(f"flows of {bridge} changed")
        process.wait()
        with self.lock:
            followed = self.bridge != bridge
        if connected and not followed and not self.stopping.is_set():
            self.wake(f"lost the OpenFlow connection to {bridge}")
        return connected_to

    def stop(self) -> None:
        """Stop the ovs-ofctl monitor (SIGTERM, then SIGKILL after 5 s) and its thread."""
        with self.lock:
            process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
        if self.thread.is_alive():
            self.thread.join(timeout=5)


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
        self.fabric = fabric.load(self.config)
        self.mtime = self._mtime()
        self.host = surveys.select_host(self.fabric, host)
        self.reasons: deque[str] = deque()  # appended by the threads, taken by the loop
        self.wakeup = Wakeup()
        # Set by the signal handlers only, read by the loop: plain attributes, no lock.
        self.stop_requested = False
        self.run_requested = False
        self.stopping = threading.Event()  # tells the threads; set by the loop only
        self.flows: FlowMonitor | None = None
        self.stop_ovsdb: Callable[[], None] | None = None
        self.failures = 0
        self.retry_at: float | None = None
        self.waiting_for: dict[str, str] = {}
        self.notes: tuple[str, ...] = ()

    def _mtime(self) -> float | None:
        try:
            return self.config.stat().st_mtime
        except OSError:
            return None

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
        try:
            if not self.stop_requested:
                self._converge(["start"])
            self._loop()
        finally:
            self.stopping.set()
            self.flows.stop()
            if self.stop_ovsdb is not None:
                self.stop_ovsdb()
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
            reasons = self._take()
            now = time.monotonic()
            if now >= next_file_check:
                next_file_check = now + FILE_CHECK
                if self._reload():
                    reasons.append("the fabric file changed")
            if self.retry_at is not None and now >= self.retry_at:
                reasons.append("retry")
            if not reasons:
                continue
            end = time.monotonic() + SETTLE
            while not self.stop_requested and time.monotonic() < end:
                self.wakeup.wait(end - time.monotonic())
            if self.stop_requested:
                return
            self._converge(reasons + self._take())

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
        mtime = self._mtime()
        if mtime == self.mtime:
            return False
        self.mtime = mtime
        try:
            new = fabric.load(self.config)
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
        self.log(f"loaded the changed fabric file {self.config}"
                 + (f"; watching the flows of {new.overlay.bridge} now" if renamed else ""))
        if renamed and self.flows is not None:
            self.flows.follow(new.overlay.bridge)
        return True

    def _traceback(self, exc: BaseException) -> None:
        if self.debug:
            self.log("".join(traceback.format_exception(exc)).rstrip())

    def _converge(self, reasons: list[str]) -> None:
        why = ", ".join(dict.fromkeys(reasons))
        self.retry_at = None
        try:
            if self.stop_ovsdb is None:
                # Started here, so that a database that is not there yet is retried.
                self.stop_ovsdb = ovsdb.watch(self.db or ovsdb.default_remote(), self.wake,
                                              self.timeout)
            result = engine.up(self.fabric, self.host, self.db, self.timeout)
        except engine.RefusedPorts as exc:
            # A VM that is not running yet: its port's device appears later, and
            # the OVSDB event of ovs-vswitchd taking it wakes us then.
            result = exc.result
            if result.refused != self.waiting_for:
                self.log(f"waiting for ports ovs-vswitchd cannot open yet: {exc}")
        except Exception as exc:  # noqa: BLE001 - a daemon retries whatever failed
            self._failed(why, exc)
            return
        self.failures = 0
        self._report(why, result)

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

    def _report(self, why: str, result: engine.RunResult) -> None:
        """A run ended: what it repaired, the ports it waits for, its new notes."""
        if not result.refused and self.waiting_for:
            self.log(f"ports open now: {', '.join(sorted(self.waiting_for))}")
        self.waiting_for = dict(result.refused)
        if result.changed:
            changes = "; ".join(result.plan.lines())
            self.log(f"repaired ({why}): {changes}")
        elif self.verbose:
            self.log(f"checked ({why}): no drift")
        for note in result.plan.notes:
            if note not in self.notes:
                self.log(f"note: {note}")
        self.notes = result.plan.notes

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
