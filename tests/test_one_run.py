"""One run at a time, and recovery from a run that died, without a human (real switch,
real links): the host lock, adopting a dead run's state, the confirmation timer's
proof of life, and helpers that never import from where they were started."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ovsenv import wait_for
from test_safe_apply import (
    GATEWAY,
    assert_restored,
    awaiting_confirmation,
    host_state,
    rollback_file,
    start,
    timer_gone,
)

LOCK_FILE = "ovsnvgre.lock"


def converged_state(host) -> dict:
    """The state a clean `up` builds on this host (which is left converged)."""
    assert host.ovsnvgre("up").returncode == 0
    return host_state(host)


def kill_mid_underlay_change(host) -> None:
    """Start `up` and kill -9 it after its OVSDB transaction, before the addresses move
    (a stopped ovs-vswitchd holds it right there)."""
    vswitchd = int((host.switch.rundir / "ovs-vswitchd.pid").read_text())
    os.kill(vswitchd, signal.SIGSTOP)
    run = start(host, "up")
    try:
        wait_for(lambda: "br0" in host.switch.vsctl("--no-wait", "list-br"),
                 30, what="the transaction to reach the database")
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=10)
    finally:
        os.kill(vswitchd, signal.SIGCONT)
        run.kill()
    assert rollback_file(host).exists()


def test_the_next_up_takes_a_killed_run_over_and_converges(host1):
    kill_mid_underlay_change(host1)
    assert "the next `up` takes it over" in host1.ovsnvgre("plan").stdout
    result = host1.ovsnvgre("up")
    assert result.returncode == 0, result.stderr
    assert "taking over the unfinished run" in result.stderr
    assert not rollback_file(host1).exists()
    recovered = host_state(host1)
    assert "no changes" in host1.ovsnvgre("up").stdout
    assert host1.ping(GATEWAY)
    assert host1.ovsnvgre("down").returncode == 0
    assert converged_state(host1) == recovered


def test_rollback_after_a_kill_returns_to_the_state_before_it(host1):
    before = host_state(host1)
    kill_mid_underlay_change(host1)
    result = host1.switch.ovsnvgre("rollback")
    assert result.returncode == 0, result.stderr
    assert "rolled back `ovsnvgre up` of host host1" in result.stdout
    assert_restored(host1, before)
    assert not rollback_file(host1).exists()
    assert host1.ping(GATEWAY)


# Each phase of a run (engine.py) announces itself on stderr before it acts; a kill
# right after the line lands in that phase.  Those after "applying N OVSDB changes"
# come after the rollback state was saved, so the kill leaves it behind.
PHASES = (("reading", False), ("probing", False), ("OVSDB changes in one transaction", True),
          ("address, route and link changes", True), ("underlay check passed", True),
          ("flow changes in one bundle", True))


def kill_at(host, marker: str | None, delay: float = 0.0, command: str = "up") -> bool:
    """Start ``command`` (`up`), kill -9 it when it prints ``marker`` (or after ``delay``
    seconds); whether it left a rollback state behind."""
    run = start(host, command)
    try:
        if marker is None:
            time.sleep(delay)
        else:
            assert run.stderr is not None
            for line in run.stderr:
                if marker in line:
                    break
            else:
                raise AssertionError(f"`{command}` ended without printing {marker!r}")
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=10)
    finally:
        run.kill()
    return rollback_file(host).exists()


def test_kill_9_in_every_phase_then_a_plain_up_leaves_the_clean_state(host1):
    clean = converged_state(host1)
    moments = [(marker, 0.0) for marker, _ in PHASES] + [(None, d) for d in (0.3, 0.4, 0.5)]
    for marker, delay in moments:
        assert host1.ovsnvgre("down").returncode == 0
        left_state = kill_at(host1, marker, delay)
        if marker is not None:
            assert left_state == dict(PHASES)[marker], marker
        result = host1.ovsnvgre("up")
        where = marker or f"{delay} s"
        assert result.returncode == 0, f"after a kill at {where}: {result.stderr}"
        assert ("taking over the unfinished run" in result.stderr) == left_state, where
        assert not rollback_file(host1).exists()
        assert host_state(host1) == clean, f"after a kill at {where}"
    assert host1.ping(GATEWAY)


def test_a_down_killed_before_the_uplink_got_its_addresses_back_is_finished(host1):
    """The OVSDB transaction of `down` deleted the uplink's row, and with it the record
    of what the uplink held: the next run takes it from the saved state."""
    original = host_state(host1)
    assert host1.ovsnvgre("up").returncode == 0
    assert kill_at(host1, "address, route and link changes", command="down")
    # The uplink's row is gone (the killed run's transaction deleted it); its addresses
    # may or may not be back, depending on where exactly the kill landed.
    assert "eth1" not in host1.switch.vsctl("list-ports", "br0", check=False).split()
    result = host1.ovsnvgre("down")
    assert result.returncode == 0, result.stderr
    assert_restored(host1, original)
    assert not rollback_file(host1).exists()
    assert host1.ping(GATEWAY)


def test_an_up_after_a_killed_down_builds_the_clean_state(host1):
    original = host_state(host1)
    clean = converged_state(host1)
    assert kill_at(host1, "address, route and link changes", command="down")
    result = host1.ovsnvgre("up")
    assert result.returncode == 0, result.stderr
    assert host_state(host1) == clean
    assert host1.ovsnvgre("down").returncode == 0
    assert_restored(host1, original)


def _lock_holder(host) -> int | None:
    try:
        return json.loads((host.switch.rundir / LOCK_FILE).read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def test_two_runs_at_once_take_turns(host1):
    # The first run holds the lock while ovs-vswitchd is stopped under it, so the second
    # certainly finds it taken, whatever the machine's load: it waits, then runs.
    vswitchd = int((host1.switch.rundir / "ovs-vswitchd.pid").read_text())
    os.kill(vswitchd, signal.SIGSTOP)
    try:
        first = start(host1, "up")
        wait_for(lambda: _lock_holder(host1) == first.pid, 30, what="the first run's lock")
        second = start(host1, "up")
        said = []
        while not said or "waiting up to" not in said[-1]:
            line = second.stderr.readline()
            assert line, said
            said.append(line)
    finally:
        os.kill(vswitchd, signal.SIGCONT)
    assert f"waiting up to 60 s for `ovsnvgre up` (pid {first.pid}" in said[-1], said
    outputs = [run.communicate(timeout=120) for run in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outputs
    assert not rollback_file(host1).exists()
    assert "no changes" in host1.ovsnvgre("up").stdout
    assert host1.ping(GATEWAY)


def test_a_held_lock_is_waited_for_then_refused_in_one_line(host1):
    before = host_state(host1)
    holder = subprocess.Popen(["sleep", "60"])
    fd = os.open(host1.switch.rundir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, json.dumps({"pid": holder.pid, "command": "down",
                                 "started": time.time()}).encode())
        began = time.monotonic()
        result = host1.ovsnvgre("up", "--wait", "1")
        assert time.monotonic() - began >= 1
    finally:
        os.close(fd)
        holder.kill()
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"ovsnvgre: error: `ovsnvgre down` (pid {holder.pid}, started ")
    assert "is changing this host and did not finish within 1 s" in lines[-1]
    assert "Traceback" not in result.stderr
    assert_restored(host1, before)
    assert not rollback_file(host1).exists()
    # Released (its holder gone), the lock is free at once.
    assert host1.ovsnvgre("up", "--wait", "0").returncode == 0


def test_a_rollback_that_died_is_taken_over_by_the_next_rollback(host1):
    before = host_state(host1)
    kill_mid_underlay_change(host1)
    path = rollback_file(host1)
    # A rollback killed after it moved the state aside, before restoring anything.
    path.rename(path.with_name(path.name + ".rolling-back"))
    assert "nothing to roll back" not in host1.switch.ovsnvgre("rollback").stderr
    assert_restored(host1, before)
    assert not path.exists() and not path.with_name(path.name + ".rolling-back").exists()


def test_a_dead_timer_is_never_signalled_and_its_run_is_taken_over(host1):
    before = host_state(host1)
    run = start(host1, "up", "--confirm", "120")
    bystander = subprocess.Popen(["sleep", "120"])
    try:
        wait_for(lambda: awaiting_confirmation(host1), 60, what="the run to wait for confirm")
        proof = host1.switch.rundir / "ovsnvgre-rollback.json.timer"
        timer = int(wait_for(lambda: proof.read_text().strip(), 30, what="the timer's pid"))
        # The timer and its `up` die (a reboot, an OOM kill); a pid file naming another
        # live process is left behind.
        os.kill(timer, signal.SIGKILL)
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=10)
        wait_for(lambda: not Path(f"/proc/{timer}").exists(), 10, what="the timer to die")
        (host1.switch.rundir / "ovsnvgre-rollback.json.timer").write_text(str(bystander.pid))
        result = host1.switch.ovsnvgre("rollback")
        assert result.returncode == 0, result.stderr
        assert bystander.poll() is None, "rollback signalled a process that is not the timer"
    finally:
        run.kill()
        bystander.kill()
    assert_restored(host1, before)
    assert host1.ping(GATEWAY)


def test_the_confirmation_timer_never_imports_from_the_directory_it_was_started_in(
        host1, tmp_path):
    planted = tmp_path / "planted"
    (planted / "ovsnvgre").mkdir(parents=True)
    marker = tmp_path / "planted-code-ran"
    (planted / "ovsnvgre" / "__init__.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n")
    before = host_state(host1)
    script = Path(sys.executable).parent / "ovsnvgre"  # the installed command, as root runs it
    result = subprocess.run(
        ["ip", "netns", "exec", host1.netns.name, str(script), "up", "--confirm", "3", "-c",
         str(host1.fabric), "--host", host1.name], cwd=planted, env=host1.switch.env,
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "not confirmed in time: rolled back" in result.stdout, \
        result.stderr
    assert not marker.exists()
    wait_for(lambda: timer_gone(host1), 30, what="the timer to exit")
    assert_restored(host1, before)
