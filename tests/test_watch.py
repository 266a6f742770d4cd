"""`ovsnvgre watch` on a real two-host lab: repairs by itself, reloads, stops cleanly."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fabrics import TWO_HOSTS
from ovsenv import sh, wait_for

from ovsnvgre import watch as watching
from ovsnvgre.desired import desired_host
from ovsnvgre.fabric import load
from ovsnvgre.pipeline import desired_flows, table_of

RED_TUNNEL = "gcb00710b001389"
COOKIE = "0x6f76736e76677265"


@contextlib.contextmanager
def watch_process(host, command: list[str], log: Path) -> Iterator[subprocess.Popen]:
    """``command`` (a watch) run in ``host``'s namespace with its switch's environment,
    its output in ``log``; killed at the end if it is still running."""
    with log.open("w") as sink:
        process = subprocess.Popen(["ip", "netns", "exec", host.netns.name, *command],
                                   env=host.switch.env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        print(log.read_text())


def watch_command(fabric: Path, *options: str, debug: bool = False) -> list[str]:
    return [sys.executable, "-m", "ovsnvgre", *(["--debug"] if debug else []), "watch",
            "-c", str(fabric), "--host", "host1", *options]


def stop(process: subprocess.Popen, log: Path) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    assert log.read_text().rstrip().endswith("ovsnvgre watch: stopped")


def flows(host) -> str:
    return sh("ovs-ofctl", "--names", "dump-flows", "br-int", env=host.switch.env,
              check=False).stdout


def classify_flows(path) -> int:
    """How many flows the classify stage of host1 has, all its ports live."""
    desired = desired_host(load(path), "host1")
    return sum(f.table == table_of("classify")
               for f in desired_flows(desired, set(desired.ports)))


def test_watch_keeps_the_host_converged(lab, tmp_path):
    host1 = lab.host("host1", "198.51.100.11/24", "198.51.100.1")
    host2 = lab.host("host2", "203.0.113.11/24", "203.0.113.1")
    red_a = lab.vm(host1, "vnet0", "02:00:00:00:50:01", "10.0.0.1/24")
    lab.vm(host2, "vnet0", "02:00:00:00:50:02", "10.0.0.2/24")
    # blue-a's VM is not running yet: its port's device does not exist.
    host1.netns.exec("ip", "link", "delete", "vnet1")
    assert host2.ovsnvgre("up").returncode == 0
    fabric = tmp_path / "host1.yaml"
    fabric.write_text(TWO_HOSTS)
    log = tmp_path / "watch.log"
    with log.open("w") as sink:
        watch = subprocess.Popen(
            ["ip", "netns", "exec", host1.netns.name, sys.executable, "-m", "ovsnvgre",
             "watch", "-c", str(fabric), "--host", "host1"],
            env=host1.switch.env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "waiting for ports" in log.read_text(), 30, "the first run")
        assert "vnet1" in log.read_text()
        assert red_a.ping("10.0.0.2")

        # A VM starts: its port appears, ovs-vswitchd opens it, watch adds its flows.
        host1.netns.exec("ip", "link", "add", "vnet1", "type", "veth", "peer", "name", "vm1")
        host1.netns.exec("ip", "link", "set", "vnet1", "up")
        wait_for(lambda: "in_port=vnet1" in flows(host1), 5, "the new port's flows")
        wait_for(lambda: "ports open now: vnet1" in log.read_text(), 5, "the log line")

        # Someone edits an owned row.
        host1.switch.vsctl("set", "interface", RED_TUNNEL, "options:key=99")
        wait_for(lambda: host1.switch.vsctl("get", "interface", RED_TUNNEL,
                                            "options:key").strip() == f'"{5001 << 8}"',
                 2.5, "the tunnel key repaired")
        # The line follows the repair (by milliseconds: it may come after `get` reads it).
        wait_for(lambda: f"repair tunnel port {RED_TUNNEL}" in log.read_text(), 2.5,
                 "the repair logged")

        # ovs-vswitchd dies and comes back without its flows.
        seen = len(log.read_text())
        host1.switch.stop_vswitchd(signal.SIGKILL)
        host1.switch.start_vswitchd()
        began = time.monotonic()
        wait_for(lambda: red_a.ping("10.0.0.2", count=1), 15, "the VMs to ping")
        seconds = time.monotonic() - began
        print(f"VMs pinged again {seconds:.1f} s after ovs-vswitchd restarted")
        # Put back by watch (woken by the lost connection, its retry, or its return).
        after = log.read_text()[seen:]
        assert "lost the OpenFlow connection to br-int" in after
        assert f"flows in table classify of br-int: +{classify_flows(fabric)}" in after

        # An invalid fabric file is reported and the last good one kept ...
        fabric.write_text(TWO_HOSTS.replace("vsid: 5001", "vsid: 12"))
        wait_for(lambda: "ignoring the changed fabric file" in log.read_text(), 5,
                 "the invalid file reported")
        host1.switch.vsctl("set", "interface", RED_TUNNEL, "options:key=98")
        wait_for(lambda: host1.switch.vsctl("get", "interface", RED_TUNNEL,
                                            "options:key").strip() == f'"{5001 << 8}"',
                 2.5, "the repair with the last good fabric")
        # ... and a valid one is taken: blue-a leaves the fabric, its port goes.
        fabric.write_text("\n".join(line for line in TWO_HOSTS.splitlines()
                                    if not line.startswith("  blue-a:")) + "\n")
        wait_for(lambda: "vnet1" not in host1.switch.vsctl("list-ports", "br-int"), 5,
                 "blue-a's port removed")
        assert "loaded the changed fabric file" in log.read_text()

        watch.send_signal(signal.SIGTERM)
        assert watch.wait(timeout=15) == 0
        assert log.read_text().rstrip().endswith("ovsnvgre watch: stopped")
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
        print(log.read_text())


def test_watch_attaches_a_recreated_vm_device_again(lab, tmp_path):
    host1 = lab.host("host1", "198.51.100.11/24", "198.51.100.1")
    host2 = lab.host("host2", "203.0.113.11/24", "203.0.113.1")
    red_a = lab.vm(host1, "vnet0", "02:00:00:00:50:01", "10.0.0.1/24")
    red_b = lab.vm(host2, "vnet0", "02:00:00:00:50:02", "10.0.0.2/24")
    lab.vm(host1, "vnet1", "02:00:00:00:60:01", "10.0.0.1/24")
    assert host2.ovsnvgre("up").returncode == 0
    fabric = tmp_path / "host1.yaml"
    fabric.write_text(TWO_HOSTS)
    log = tmp_path / "watch.log"
    with watch_process(host1, watch_command(fabric), log) as process:
        wait_for(lambda: "repaired (start)" in log.read_text(), 60, "the first run")
        assert red_a.ping("10.0.0.2")
        seen = len(log.read_text())
        # The VM restarts: its device is deleted and made again under the same name.
        lab.replug(host1, "vnet0", red_a)
        began = time.monotonic()
        wait_for(lambda: red_a.ping("10.0.0.2", count=1), 30, "red-a to reach red-b again")
        print(f"red-a reached red-b {time.monotonic() - began:.1f} s after its device was "
              "made again")
        assert red_a.tcp(red_b)
        repair = next(line for line in log.read_text()[seen:].splitlines()
                      if "to attach it again" in line)
        # What woke it: the Interface row's link_state and ifindex change in OVSDB.
        assert "Interface vnet0 update" in repair, repair
        stop(process, log)


def test_watch_follows_a_renamed_integration_bridge(host1, tmp_path):
    fabric = tmp_path / "host1.yaml"
    fabric.write_text(TWO_HOSTS)
    log = tmp_path / "watch.log"
    env = host1.switch.env
    with watch_process(host1, watch_command(fabric, "--verbose"), log) as process:
        wait_for(lambda: "repaired (start)" in log.read_text(), 60, "the first run")
        fabric.write_text(TWO_HOSTS.replace("bridge: br-int", "bridge: br-vm"))
        wait_for(lambda: "in_port=vnet0" in sh("ovs-ofctl", "--names", "dump-flows", "br-vm",
                                               env=env, check=False).stdout,
                 20, "the flows on the renamed bridge")
        assert "watching the flows of br-vm now" in log.read_text()
        assert "br-int" not in host1.switch.vsctl("list-br")

        # A flow change on br-vm wakes watch: a flow of someone else's, changed until
        # the monitor (started again on br-vm) sees it.
        def seen_on_br_vm() -> bool:
            sh("ovs-ofctl", "add-flow", "br-vm",
               f"cookie=0x1234,table=50,priority=1,idle_timeout={int(time.time()) % 1000},"
               "actions=drop", env=env)
            return "(flows of br-vm changed" in log.read_text()

        wait_for(seen_on_br_vm, 20, "the flow monitor on br-vm")

        # Only the flow monitor can see this: no OVSDB row and no file changes.
        def classify_flows() -> int:
            out = sh("ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-vm",
                     f"cookie={COOKIE}/-1,table=0", env=env).stdout
            return len(out.splitlines()) - 1

        wanted = classify_flows()
        seen = len(log.read_text())
        sh("ovs-ofctl", "-O", "OpenFlow13", "del-flows", "br-vm",
           f"cookie={COOKIE}/-1,table=0", env=env)
        wait_for(lambda: classify_flows() == wanted, 20, "the flows put back")
        # The line is written once the bundle is in: the flows can be back before it.
        repair = wait_for(lambda: next((line for line in log.read_text()[seen:].splitlines()
                                        if f"flows in table classify of br-vm: +{wanted}"
                                        in line), None), 10, "watch to log the repair")
        assert "(flows of br-vm changed" in repair
        stop(process, log)


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_watch_waits_for_a_switch_that_is_not_there_yet(lab, tmp_path, debug):
    """As at boot, before Open vSwitch: each failure is one line and retried with the
    backoff; --debug adds the traceback."""
    host1 = lab.host("host1", "198.51.100.11/24", "198.51.100.1", start=False)
    fabric = tmp_path / "host1.yaml"
    fabric.write_text(TWO_HOSTS)
    log = tmp_path / "watch.log"
    with watch_process(host1, watch_command(fabric, debug=debug), log) as process:
        wait_for(lambda: "trying again in 2 s" in log.read_text(), 30, "two failures")
        text = log.read_text()
        assert "could not converge (start): cannot reach ovsdb-server" in text
        assert "trying again in 1 s" in text
        assert ("Traceback (most recent call last)" in text) is debug
        host1.switch.start()
        wait_for(lambda: "repaired (retry)" in log.read_text(), 60,
                 "the run once the switch is there")
        stop(process, log)


FLAKY = """
import sys
from ovsnvgre import engine, watch

real_up, calls = engine.up, []


def up(*args, **kwargs):
    calls.append(1)
    if len(calls) <= 2:
        raise RuntimeError("injected failure")
    return real_up(*args, **kwargs)


engine.up = up
watch.run(sys.argv[1], "host1", None, 30.0, lambda m: print(m, flush=True),
          debug=sys.argv[2] == "debug")
print("stopped", flush=True)
"""


@pytest.mark.parametrize("mode", ["plain", "debug"])
def test_watch_retries_an_unexpected_exception(host1, tmp_path, mode):
    """Not only OvsnvgreError: a bug's exception (injected into a real run) is retried too."""
    fabric = tmp_path / "host1.yaml"
    fabric.write_text(TWO_HOSTS)
    log = tmp_path / "watch.log"
    command = [sys.executable, "-c", FLAKY, str(fabric), mode]
    with watch_process(host1, command, log) as process:
        wait_for(lambda: "repaired (retry)" in log.read_text(), 30, "the third run")
        text = log.read_text()
        assert ("could not converge (start): internal error: RuntimeError: injected "
                "failure; trying again in 1 s") in text
        # The second run: woken by the retry or by an OVSDB event, whichever comes first.
        assert re.search(r"could not converge \([^)]*\): internal error: RuntimeError: "
                         r"injected failure; trying again in 2 s", text)
        assert ("Traceback (most recent call last)" in text) is (mode == "debug")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        assert log.read_text().rstrip().endswith("stopped")


def test_the_signal_handlers_only_set_a_flag(tmp_path):
    """A handler runs between two bytecodes of the main thread, maybe while that holds a
    lock: one that takes a lock (queue.Queue.put, threading.Event.set) can deadlock."""
    fabric = tmp_path / "fabric.yaml"
    fabric.write_text(TWO_HOSTS)
    watcher = watching.Watcher(str(fabric), "host1", None, 30.0, print)
    calls: list[str] = []

    def profile(frame, event, arg):
        if event == "c_call":
            calls.append(getattr(arg, "__qualname__", repr(arg)))

    sys.setprofile(profile)
    try:
        watcher.on_stop_signal(signal.SIGTERM, None)
        watcher.on_run_signal(signal.SIGHUP, None)
    finally:
        sys.setprofile(None)
    assert [call for call in calls if call != "setprofile"] == []
    assert watcher.stop_requested and watcher.run_requested


def test_a_storm_of_signals_neither_kills_nor_blocks_watch(host1, tmp_path):
    fabric = tmp_path / "host1.yaml"
    fabric.write_text(TWO_HOSTS)
    log = tmp_path / "watch.log"
    with watch_process(host1, watch_command(fabric), log) as process:
        wait_for(lambda: "repaired (start)" in log.read_text(), 60, "the first run")
        sent, end = 0, time.monotonic() + 4
        while time.monotonic() < end and process.poll() is None:
            os.kill(process.pid, signal.SIGHUP)
            sent += 1
            time.sleep(0.0002)
        print(f"sent {sent} SIGHUP")
        assert process.poll() is None, "watch died"
        stop(process, log)
