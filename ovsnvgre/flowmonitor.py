"""`ovs-ofctl monitor` of the integration bridge, for `ovsnvgre watch`.

Every flow event wakes watch, except the ones a run of watch said it would cause
(``expect``): an incremental run's own bundle (watch_run.py) is not a change to
repair.  They are told apart by kind (added, deleted), table and ovsnvgre's cookie,
counted: a bundle's flow-mods are committed together, so its events all arrive, and
any event beyond the expected ones, or expected ones that never come (``overdue``),
is someone else's change.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable

from ovsnvgre.pipeline import COOKIE, Flow

MONITOR_RESTART = 0.5  # seconds between two starts of the flow monitor
ECHO_WITHIN = 1.0      # seconds the events of watch's own bundle have to arrive
# " event=ADDED table=N cookie=0x6f76...": the kind, the table and the cookie of one
# flow (lib/ofp-monitor.c, ofputil_flow_update_format; no priority is printed).
EVENT = re.compile(r"event=(ADDED|MODIFIED|DELETED)(?: reason=\S+)? table=(\d+)"
                   r"(?: (?:idle|hard)_timeout=\d+)* cookie=(0x[0-9a-f]+)")
# An add that replaces a flow is reported as added (ofproto.c, replace_rule_finish).
KINDS = {"ADDED": "added", "MODIFIED": "added", "DELETED": "deleted"}


class FlowMonitor:
    """`ovs-ofctl monitor BRIDGE watch:!initial`, restarted whenever it ends, on the
    bridge last given to ``follow``."""

    def __init__(self, bridge: str, wake: Callable[[str], None], stopping: threading.Event
                 ) -> None:
        """``wake(reason)`` is called from the monitor's thread on every flow event that
        was not expected."""
        self.bridge, self.wake, self.stopping = bridge, wake, stopping
        # Guards bridge, process and the expected events between the two threads.
        self.lock = threading.Lock()
        self.process: subprocess.Popen[str] | None = None
        self.expected: Counter[tuple[str, int]] = Counter()
        self.expected_until = 0.0
        self.missed = False  # expected events that did not come in time
        # While a full run goes (hold ... release): its events, told apart once it says
        # what it changed.
        self.held: list[str] | None = None
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
            self._forget()
            if self.process is not None and self.process.poll() is None:
                self.process.terminate()

    def _run(self) -> None:
        connected_to: str | None = None  # the bridge the last monitor connected to
        while not self.stopping.is_set():
            with self.lock:
                bridge = self.bridge
                self._forget()  # between two monitors, events go unseen
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
            elif "event=" in line and not self._expected(line):
                with self.lock:
                    if self.held is not None:
                        self.held.append(line)  # the full run's own, maybe: see release
                        continue
                self.wake(f"flows of {bridge} changed")
        process.wait()
        with self.lock:
            followed = self.bridge != bridge
        if connected and not followed and not self.stopping.is_set():
            self.wake(f"lost the OpenFlow connection to {bridge}")
        return connected_to

    def hold(self) -> None:
        """A full run starts: keep the events that are not expected until ``release``."""
        with self.lock:
            self.held = []

    def release(self, added: Iterable[Flow], deleted: Iterable[Flow]) -> None:
        """The full run ended having ``added`` and ``deleted`` these flows (nothing, when it
        failed): its events are expected (those held, and those still to come); any
        other held event wakes."""
        self.expect(added, deleted)
        with self.lock:
            held, self.held = self.held or [], None
        if any(not self._expected(line) for line in held):
            self.wake(f"flows of {self.bridge} changed")

    def _forget(self) -> None:
        """The monitor is about to miss events: what was expected is missed (lock held)."""
        if self.expected:
            self.expected.clear()
            self.missed = True
        if self.held:
            self.held = None
            self.missed = True

    def expect(self, added: Iterable[Flow], deleted: Iterable[Flow]) -> None:
        """The events the bundle about to be applied will cause: no wake-up for them."""
        with self.lock:
            self.expected.update(("added", flow.table) for flow in added)
            self.expected.update(("deleted", flow.table) for flow in deleted)
            self.expected_until = time.monotonic() + ECHO_WITHIN

    def overdue(self) -> bool:
        """Whether expected events did not all come in time (the monitor missed them, or
        the bundle did not do what it said): forgets them and returns True once."""
        with self.lock:
            if self.expected and time.monotonic() >= self.expected_until:
                self.expected.clear()
                self.missed = True
            missed, self.missed = self.missed, False
            return missed

    def _expected(self, line: str) -> bool:
        """Whether the event ``line`` is one of the expected ones (then it is used up)."""
        found = EVENT.search(line)
        if found is None or int(found.group(3), 16) != COOKIE:
            return False
        key = (KINDS[found.group(1)], int(found.group(2)))
        with self.lock:
            if self.expected and time.monotonic() > self.expected_until:
                self.expected.clear()  # too late to be the bundle's events
                self.missed = True
            if self.expected[key] <= 0:
                return False
            self.expected[key] -= 1
            if not self.expected[key]:
                del self.expected[key]
            return True

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
