"""The flow monitor wakes watch for every flow event but those of watch's own bundles
(flowmonitor.py), told apart from the lines `ovs-ofctl monitor` prints."""

from __future__ import annotations

import threading
import time

from ovsnvgre import flowmonitor
from ovsnvgre.flowmonitor import FlowMonitor
from ovsnvgre.pipeline import COOKIE, Flow

OURS = f"{COOKIE:#x}"


def event(kind: str, table: int, cookie: str = OURS) -> str:
    """A line as ovs-ofctl monitor prints it (lib/ofp-monitor.c)."""
    reason = " reason=delete" if kind == "DELETED" else ""
    return (f" event={kind}{reason} table={table} cookie={cookie} "
            "reg0=0x1389,dl_dst=02:00:00:00:50:01 actions=output:vnet0\n")


def monitor() -> tuple[FlowMonitor, list[str]]:
    woken: list[str] = []
    return FlowMonitor("br-int", woken.append, threading.Event()), woken


def flow(table: int) -> Flow:
    return Flow(table, 100, frozenset({f"reg0={table}"}), "drop")


def test_the_events_of_its_own_bundle_are_expected_and_no_more():
    flows, _ = monitor()
    flows.expect([flow(0), flow(0), flow(20)], [flow(10)])
    assert flows._expected(event("ADDED", 0))
    assert flows._expected(event("MODIFIED", 0))  # an add that replaced a flow
    assert not flows._expected(event("ADDED", 10)), "not a table it added to"
    assert flows._expected(event("DELETED", 10))
    assert not flows._expected(event("DELETED", 10)), "one deletion expected, not two"
    assert not flows._expected(event("ADDED", 20, cookie="0x1234")), "someone else's flow"
    assert flows._expected(event("ADDED", 20))
    assert not flows.overdue()


def test_expected_events_that_never_come_are_missed():
    flows, _ = monitor()
    flows.expect([flow(0)], [])
    assert not flows.overdue()
    flows.expected_until = time.monotonic() - flowmonitor.ECHO_WITHIN  # the time passed
    assert flows.overdue()
    assert not flows.overdue(), "said once"
    flows.expect([flow(0)], [])
    flows.expected_until = time.monotonic() - 1
    assert not flows._expected(event("ADDED", 0)), "too late to be the bundle's"
    assert flows.overdue()


def test_a_full_runs_events_are_held_until_it_says_what_it_changed():
    flows, woken = monitor()
    flows.hold()
    with flows.lock:
        flows.held.append(event("ADDED", 0))
        flows.held.append(event("ADDED", 20))
    flows.release([flow(0), flow(20), flow(20)], [])
    assert woken == []
    assert flows._expected(event("ADDED", 20)), "one still to come"
    flows.hold()
    with flows.lock:
        flows.held.append(event("DELETED", 0))
    flows.release([], [])  # the run failed, or changed nothing: someone else did that
    assert woken == ["flows of br-int changed"]


def test_a_restarted_monitor_misses_what_was_expected():
    flows, _ = monitor()
    flows.expect([flow(0)], [])
    flows.follow("br-vm")
    assert flows.overdue()
