"""Promises the README makes that had no test of their own (issue 16): announcements
after a move, the time bound on a database that does not answer, an atomic bundle,
--debug's list of changes, `confirm` when it is too late."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from test_safe_apply import GATEWAY, rollback_file

from ovsnvgre import openflow
from ovsnvgre.errors import SystemFailure
from ovsnvgre.pipeline import Flow


def capture(lab, ifname: str) -> subprocess.Popen:
    """ARP and ICMPv6 as the router sees them on ``ifname`` (tcpdump, text)."""
    process = subprocess.Popen(
        ["ip", "netns", "exec", lab.router.name, "tcpdump", "-l", "-nn", "-i", ifname,
         "arp or icmp6"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    process.stderr.readline()  # "listening on ..." once it captures
    return process


def captured(process: subprocess.Popen) -> str:
    time.sleep(0.5)
    process.terminate()
    out, _ = process.communicate(timeout=10)
    return out


def test_moved_addresses_are_announced_both_ways(lab, host1):
    sniffer = capture(lab, "r-host1")
    try:
        assert host1.ovsnvgre("up").returncode == 0
    finally:
        seen = captured(sniffer)
    assert "Request who-has 198.51.100.11 tell 198.51.100.11" in seen, seen
    sniffer = capture(lab, "r-host1")
    try:
        assert host1.ovsnvgre("down").returncode == 0
    finally:
        seen = captured(sniffer)
    assert "Request who-has 198.51.100.11 tell 198.51.100.11" in seen, seen


def test_a_database_that_does_not_answer_fails_within_seconds(host1):
    server = int((host1.switch.rundir / "ovsdb-server.pid").read_text())
    os.kill(server, signal.SIGSTOP)
    try:
        began = time.monotonic()
        result = host1.ovsnvgre("up")
        took = time.monotonic() - began
    finally:
        os.kill(server, signal.SIGCONT)
    assert result.returncode == 1
    assert took < 10, f"took {took:.1f} s"
    assert result.stderr.strip().splitlines()[-1].startswith("ovsnvgre: error: ")
    assert "Traceback" not in result.stderr
    assert not rollback_file(host1).exists()


def test_a_bundle_with_one_bad_flow_changes_no_flow(host1, monkeypatch):
    assert host1.ovsnvgre("up").returncode == 0
    monkeypatch.setenv("OVS_RUNDIR", str(host1.switch.rundir))
    before = openflow.dump("br-int")
    good = Flow(0, 7, frozenset({"dl_src=02:00:00:00:99:99"}), "drop")
    bad = Flow(0, 7, frozenset({"in_port=no-such-port"}), "drop")
    with pytest.raises(SystemFailure):
        openflow.apply("br-int", [good, bad], [next(iter(before))])
    assert openflow.dump("br-int") == before


def test_debug_lists_each_change(host1):
    result = host1.switch.ovsnvgre("--debug", "up", "-c", str(host1.fabric), "--host",
                                   host1.name)
    assert result.returncode == 0, result.stderr
    assert "OVSDB: create bridge br0" in result.stderr
    assert "netlink: add address 198.51.100.11/24 to tep0" in result.stderr
    assert host1.ping(GATEWAY)


def test_confirm_with_nothing_pending_says_so(host1):
    result = host1.switch.ovsnvgre("confirm")
    assert result.returncode == 1
    assert result.stderr.strip() == (f"ovsnvgre: error: nothing to confirm: no rollback state "
                                     f"in {rollback_file(host1)}")
